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
from decoding import CaptionDecoder, decoder_name
from encoders import ENCODERS, ImageError, build_encoder, describe_weights, encode_pixels, load_batches, load_image
from feature_store import feature_shape
from vocabulary import Vocabulary


def check_top(top: int, beam_size: int) -> None:
    if top > beam_size:
        raise ValueError(f"--top {top} needs at least {top} beams: add --beam_size {top} (or more)")


class Captioner:
    def __init__(self, run_dir: str, max_decode_length: int = 0, beam_size: int = 1, length_penalty: float = 0.0):
        import keras

        model_path = os.path.join(run_dir, "model.keras")
        metadata_path = os.path.join(run_dir, "metadata.json")
        for path, hint in ((metadata_path, "preprocess.py"), (model_path, "train.py")):
            if not os.path.exists(path):
                raise ValueError(f"{run_dir}: no {os.path.basename(path)}; run {hint} (with the same --run_dir) first")
        with open(metadata_path, encoding="utf-8") as handle:
            self.metadata = json.load(handle)
        self.run_dir = run_dir
        self.vocabulary = Vocabulary.load(os.path.join(run_dir, "vocabulary.json"))
        self.model = keras.models.load_model(model_path, compile=False)
        self.max_length = max_decode_length or self.metadata["max_caption_length"]
        self.decoder = CaptionDecoder(self.model, self.max_length)
        self.decoder_name = decoder_name(self.model)
        if beam_size < 1:
            raise ValueError(f"--beam_size must be at least 1, got {beam_size}")
        self.beam_size, self.length_penalty = beam_size, length_penalty
        self._encoder = None

    @property
    def has_attention(self) -> bool:
        return self.decoder_name == "attention"

    def describe(self) -> str:
        return f"{self.decoder_name} decoder, encoder {self.metadata['encoder']}, weights {describe_weights(self.metadata['weights'])}"

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
        if self.beam_size == 1:
            return "greedy"
        return f"beam {self.beam_size}, length penalty {self.length_penalty}"

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
                             f"train with --decoder attention")
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
