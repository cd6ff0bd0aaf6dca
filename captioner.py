"""A trained run, ready to caption: its model, vocabulary, metadata and (on demand) its encoder.

predict.py and evaluate.py meet the earlier stages only here, through the run folder's files.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np

import attention  # noqa: F401  (registers the attention layer, so attention models load)
from decoding import CaptionDecoder, bad_ending_ids, decoder_name
from encoders import ENCODERS, ImageError, build_encoder, describe_weights, encode_pixels, load_batches, load_image
from feature_store import feature_shape
from vocabulary import Vocabulary


def check_top(top: int, beam_size: int) -> None:
    if top > beam_size:
        raise ValueError(f"--top {top} needs at least {top} beams: add --beam_size {top} (or more)")


def check_ensemble(run_dirs: Sequence[str], metadata: Sequence[dict], vocabularies: Sequence[Vocabulary]) -> None:
    """Runs captioning together must read the same features and write the same words."""
    first = run_dirs[0]
    for run_dir, other, vocabulary in zip(run_dirs[1:], metadata[1:], vocabularies[1:]):
        for key, what in (("encoder", "encoder"), ("weights", "encoder weights"), ("features", "feature kind"),
                          ("encoder_seed", "untrained encoder's seed")):
            if key == "encoder_seed" and other["weights"] != "none":
                continue
            if other.get(key, "global") != metadata[0].get(key, "global"):
                raise ValueError(f"ensemble: {run_dir} has {what} {other.get(key, 'global')}, {first} has "
                                 f"{metadata[0].get(key, 'global')}; an ensemble's runs must share encoder and features")
        if vocabulary.tokens != vocabularies[0].tokens:
            raise ValueError(f"ensemble: {run_dir} and {first} have different vocabularies; an ensemble's runs must "
                             f"be trained on the same preprocessed data (copy one run folder's features and "
                             f"vocabulary, then train each member in its copy)")


class Captioner:
    """One run, or several (an ensemble: the same encoder and vocabulary, word probabilities averaged)."""

    def __init__(self, run_dir, max_decode_length: int = 0, beam_size: int = 1, length_penalty: float = 0.0,
                 no_repeat_ngram_size: int = 0, block_bad_endings: bool = False, model_file: str = "model.keras"):
        import keras

        self.run_dirs = list(run_dir) if isinstance(run_dir, (list, tuple)) else [run_dir]
        metadata, vocabularies = [], []
        for folder in self.run_dirs:
            metadata_path, model_path = os.path.join(folder, "metadata.json"), os.path.join(folder, model_file)
            for path, hint in ((metadata_path, "preprocess.py"), (model_path, "train.py")):
                if not os.path.exists(path):
                    raise ValueError(f"{folder}: no {os.path.basename(path)}; run {hint} (with the same --run_dir) "
                                     f"first")
            with open(metadata_path, encoding="utf-8") as handle:
                metadata.append(json.load(handle))
            vocabularies.append(Vocabulary.load(os.path.join(folder, "vocabulary.json")))
        check_ensemble(self.run_dirs, metadata, vocabularies)
        if beam_size < 1:
            raise ValueError(f"--beam_size must be at least 1, got {beam_size}")
        self.run_dir, self.metadata, self.vocabulary = self.run_dirs[0], metadata[0], vocabularies[0]
        self.models = [keras.models.load_model(os.path.join(folder, model_file), compile=False)
                       for folder in self.run_dirs]
        self.model = self.models[0]
        self.max_length = max_decode_length or max(m["max_caption_length"] for m in metadata)
        self.decoder = CaptionDecoder(self.models, self.max_length, no_repeat_ngram_size,
                                      bad_ending_ids(self.vocabulary) if block_bad_endings else ())
        self.decoder_name = decoder_name(self.model)  # one kind for all: their features are of one kind
        self.beam_size, self.length_penalty = beam_size, length_penalty
        self.no_repeat_ngram_size, self.block_bad_endings = no_repeat_ngram_size, block_bad_endings
        self._encoder = None

    @classmethod
    def from_config(cls, config) -> "Captioner":
        """The run(s) and decoding settings named by a script's configuration (DECODING_FLAGS)."""
        return cls(config.resolved_run_dirs(), config.max_decode_length, config.beam_size, config.length_penalty,
                   config.no_repeat_ngram_size, config.block_bad_endings, config.model_file)

    @property
    def has_attention(self) -> bool:
        return self.decoder_name == "attention" and len(self.models) == 1

    def describe(self) -> str:
        decoder = (f"{self.decoder_name} decoder" if len(self.models) == 1 else
                   f"ensemble of {len(self.models)} {self.decoder_name} decoders")
        return f"{decoder}, encoder {self.metadata['encoder']}, weights {describe_weights(self.metadata['weights'])}"

    def caption_features(self, image_features: np.ndarray, batch_size: int = 256, beam_size: int = 0) -> List[str]:
        """The best caption of each image, with the run's beam width unless `beam_size` is given."""
        return self.decoder.captions(image_features, self.vocabulary, beam_size or self.beam_size,
                                     self.length_penalty, batch_size)

    def top_captions(self, image_features: np.ndarray, top: int, batch_size: int = 256,
                     beam_size: int = 0) -> List[List[Tuple[str, float]]]:
        """The `top` best beams of each image as (caption, log-probability), best first.

        `beam_size` overrides the run's beam width for this call (0: keep it).
        """
        beam_size = beam_size or self.beam_size
        check_top(top, beam_size)
        beams = self.decoder.beam_search(image_features, beam_size, self.length_penalty,
                                         max(1, batch_size // beam_size))
        return [[(self.vocabulary.decode(h.token_ids), h.log_probability) for h in image_beams[:top]]
                for image_beams in beams]

    def decoding(self) -> str:
        rules = (f", no repeated {self.no_repeat_ngram_size}-grams" if self.no_repeat_ngram_size else "") + \
                (", no bad endings" if self.block_bad_endings else "")
        if self.beam_size == 1:
            return "greedy" + rules
        return f"beam {self.beam_size}, length penalty {self.length_penalty}" + rules

    def encoder(self):
        """The encoder recorded in the metadata, with the same weights (and seed, when untrained)."""
        if self._encoder is None:
            self._encoder = build_encoder(self.metadata["encoder"], self.metadata["weights"],
                                          self.metadata["encoder_seed"], self.metadata.get("features", "global"))
        return self._encoder

    def image_features(self, paths: Sequence[str],
                       batch_size: int = 32) -> Tuple[List[str], np.ndarray, List[ImageError]]:
        """Features of the readable images among `paths`: (readable paths, features, errors)."""
        size = ENCODERS[self.metadata["encoder"]].input_size
        kept, vectors, errors = [], [], []
        for indices, pixels, failures, _ in load_batches(list(paths), size, batch_size):
            kept += [paths[i] for i in indices]
            if len(pixels):
                vectors.append(encode_pixels(self.encoder(), pixels))
            errors += [error for _, error in failures]
        if not vectors:
            return kept, np.zeros((0, *feature_shape(self.metadata)), np.float32), errors
        # Rounded to the store's precision, so a file gets exactly the features preprocess stored for it.
        precision = self.metadata["feature_store"]["dtype"]
        return kept, np.concatenate(vectors).astype(precision).astype(np.float32), errors

    def attention_maps(self, image_features: np.ndarray, captions: Sequence[str]) -> List[np.ndarray]:
        """For each image and caption: attention weights (words, regions) behind each word of the caption."""
        if not self.has_attention:
            raise ValueError(f"{self.run_dir} has a merge decoder, which has no attention map; "
                             f"train with --decoder attention" if len(self.models) == 1 else
                             "attention maps are drawn for one run, not an ensemble: give one --run_dir")
        # What the decoder read while writing each caption: <start> and its words (<end> is not read).
        inputs = [self.vocabulary.encode(caption, len(caption.split()))[:-1] for caption in captions]
        weights = attention.attention_weights(self.model, image_features, inputs)
        return [image_weights[:-1] for image_weights in weights]  # the last row chose <end>

    def attention_picture(self, path: str, image_features: np.ndarray, caption: str):
        """One image file's attention map for `caption` (a PIL image: the photo, then a panel per word)."""
        from PIL import Image

        from report import attention_figure

        weights = self.attention_maps(image_features[None], [caption])[0]
        pixels, _ = load_image(path, 224)  # the square picture the encoder saw, at panel size
        return attention_figure(Image.fromarray(pixels.astype(np.uint8)), caption.split(), weights)

    def caption_files(self, paths: Sequence[str], batch_size: int = 256,
                      top: int = 1) -> Tuple[Dict[str, object], Dict[str, np.ndarray], List[ImageError]]:
        """Caption of each readable file (with `top` > 1: its best beams as (caption, log-probability)),
        the features of each readable file, and the errors of the others."""
        check_top(top, self.beam_size)  # before any image is encoded
        kept, features, errors = self.image_features(paths)
        if top > 1:
            captions = self.top_captions(features, top, batch_size)
        else:
            captions = self.caption_features(features, batch_size)
        return dict(zip(kept, captions)), dict(zip(kept, features)), errors


def warn_if_untrained(captioner: Captioner) -> None:
    if captioner.metadata["weights"] == "none":
        print("WARNING: this run's encoder is UNTRAINED (--weights none): captions rest on colour and layout only",
              file=sys.stderr)
