"""A trained run, ready to caption: its model, vocabulary, metadata and (on demand) its encoder.

predict.py and evaluate.py meet the earlier stages only here, through the run folder's files. Loading the
models and checking an ensemble: loading.py; the encoder check and its warnings: encoder_check.py.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from config import PRETRAINED_DIR, SAMPLE_DATA_DIR
from decoders import attention  # noqa: F401  (registers the attention layer, so attention models load)
from decoders.decoding import CaptionDecoder, bad_ending_ids
from decoders.guided_search import GuidedSearch
from decoders.steps import decoder_name
from inputs.encoders import ENCODERS, build_encoder, describe_fine_tuning, describe_weights, encode_pixels, weights_note
from inputs.feature_store import feature_shape
from inputs.images import ImageError, load_batches, load_image
from inputs.run_folder import (BEST_MODEL, ENCODER_CHECK_DIR, ENCODER_CHECK_FEATURES, METADATA, VOCABULARY,
                               decoder_files, load_vocabulary, read_metadata)
from serving.encoder_check import cosine_similarities
from serving.loading import check_ensemble, load_decoder
from tagging.guidance import Guidance, guide, open_policy
from tagging.imagenet import GuidanceUnavailable
from tagging.policy import PolicySettings


def check_top(top: int, beam_size: int) -> None:
    if top > beam_size:
        raise ValueError(f"--top {top} needs at least {top} beams: add --beam_size {top} (or more)")


class Captioner:
    """One run, or several (an ensemble: the same encoder and vocabulary, word probabilities averaged)."""

    def __init__(self, run_dir, max_decode_length: int = 0, beam_size: int = 1, length_penalty: float = 0.0,
                 no_repeat_ngram_size: int = 0, block_bad_endings: bool = False, model_file: str = BEST_MODEL,
                 weights: str = "", ensemble_mean: str = "geometric"):
        """`weights`: the encoder's weights when they are not the ones the run recorded ('imagenet' or a
        local file; the encoder check, where the run has one, says whether they match)."""
        self.run_dirs = list(run_dir) if isinstance(run_dir, (list, tuple)) else [run_dir]
        metadata, vocabularies = [], []
        for folder in self.run_dirs:
            if not os.path.exists(os.path.join(folder, METADATA)):
                raise ValueError(f"{folder}: no {METADATA}; run preprocess.py (with the same --run_dir) first")
            metadata.append(read_metadata(folder))
            names = decoder_files(metadata[-1], model_file, os.path.join(folder, METADATA))
            for name in names:
                if not os.path.exists(os.path.join(folder, name)):
                    raise ValueError(f"{folder}: no {name}; " + ("run train.py (with the same --run_dir) first"
                                     if len(names) == 1 else "the package is incomplete: copy it whole"))
            if not os.path.exists(os.path.join(folder, VOCABULARY)):
                raise ValueError(f"{folder}: no {VOCABULARY}; the run folder is incomplete (copy it whole, or run "
                                 f"preprocess.py again)")
            vocabularies.append(load_vocabulary(folder))
        check_ensemble(self.run_dirs, metadata, vocabularies)
        if beam_size < 1:
            raise ValueError(f"--beam_size must be at least 1, got {beam_size}")
        self.run_dir, self.metadata, self.vocabulary = self.run_dirs[0], metadata[0], vocabularies[0]
        # A package of several decoders is an ensemble by itself.
        self.models = [load_decoder(os.path.join(folder, name)) for folder, settings in zip(self.run_dirs, metadata)
                       for name in decoder_files(settings, model_file)]
        self.model = self.models[0]
        self.max_length = max_decode_length or max(m["max_caption_length"] for m in metadata)
        self.decoder = CaptionDecoder(self.models, self.max_length, no_repeat_ngram_size,
                                      bad_ending_ids(self.vocabulary) if block_bad_endings else (), ensemble_mean)
        self.decoder_name = decoder_name(self.model)  # one kind for all: their features are of one kind
        self.beam_size, self.length_penalty = beam_size, length_penalty
        self.no_repeat_ngram_size, self.block_bad_endings = no_repeat_ngram_size, block_bad_endings
        self.ensemble_mean = ensemble_mean if len(self.models) > 1 else ""
        self.fine_tuned = self.metadata.get("fine_tuned_encoder")
        if self.fine_tuned and weights and weights != self.metadata["weights"]:
            print(f"note: {self.run_dir} carries its own fine-tuned encoder ({self.fine_tuned['file']}): "
                  f"--weights {weights} is not used", file=sys.stderr)
            weights = ""
        self.weights = weights or self.metadata["weights"]
        self._encoder = None
        self.policy, self.search = None, None  # guided decoding's, after guide_by_tags

    def guide_by_tags(self, settings: PolicySettings, classifier_weights: str = "auto", class_names: str = "auto") -> str:
        """Turns on guided decoding (`--guide tags`); returns '' or, when this run cannot be guided, why
        (then it captions unguided). A missing or damaged classifier or class-name file raises ValueError."""
        try:
            self.policy = open_policy(self.metadata, self.weights, self.vocabulary, settings, classifier_weights,
                                      class_names)
        except GuidanceUnavailable as reason:
            return f"no guidance by ImageNet tags for {self.run_dir}: {reason}"
        self.search = GuidedSearch(self.decoder)
        return ""

    @classmethod
    def from_config(cls, config, package_by_default: bool = False) -> "Captioner":
        """The run(s) and decoding settings named by a script's configuration (DECODING_FLAGS);
        `--weights` other than auto replaces the encoder weights the run recorded. With
        `package_by_default`, a command that names no run (no --run_dir, no --data_dir) gets the pretrained package."""
        names_a_run = config.run_dir not in ("", [""]) or os.path.abspath(config.data_dir) != SAMPLE_DATA_DIR
        run_dirs = [PRETRAINED_DIR] if package_by_default and not names_a_run else config.resolved_run_dirs()
        captioner = cls(run_dirs, config.max_decode_length, config.beam_size,
                        config.length_penalty, config.no_repeat_ngram_size, config.block_bad_endings,
                        config.model_file, "" if config.weights == "auto" else config.weights, config.ensemble_mean)
        if config.guide == "tags":
            note = captioner.guide_by_tags(PolicySettings.of(config), config.classifier_weights, config.class_names)
            if note:
                print(f"note: {note}", file=sys.stderr)
        return captioner

    @property
    def has_attention(self) -> bool:
        return self.decoder_name == "attention" and len(self.models) == 1

    def describe(self) -> str:
        decoder = (f"{self.decoder_name} decoder" if len(self.models) == 1 else
                   f"ensemble of {len(self.models)} {self.decoder_name} decoders")
        if self.fine_tuned:
            return f"{decoder}, encoder {self.metadata['encoder']} {describe_fine_tuning(self.fine_tuned)}"
        return f"{decoder}, encoder {self.metadata['encoder']}, weights {describe_weights(self.weights)}"

    def caption_features(self, image_features: np.ndarray, batch_size: int = 256, beam_size: int = 0) -> List[str]:
        """The best caption of each image, with the run's beam width unless `beam_size` is given (guided
        by the image's ImageNet tags after guide_by_tags)."""
        return self.captions_and_guidance(image_features, batch_size, beam_size)[0]

    def captions_and_guidance(self, image_features: np.ndarray, batch_size: int = 256, beam_size: int = 0,
                              guide_threshold: float = 0.0) -> Tuple[List[str], Optional[List[Guidance]]]:
        """The best caption of each image and, with guidance on, what guided it (else None).
        `beam_size`, `guide_threshold` (the floor): this call's, instead of the run's (0: the run's)."""
        beam_size = beam_size or self.beam_size
        token_ids = self.decoder.best_token_ids(image_features, beam_size, self.length_penalty, batch_size)
        guidance = None
        if self.policy is not None and len(token_ids):
            settings = self.policy.settings.with_floor(guide_threshold)
            token_ids, guidance = guide(self.policy, self.search, image_features, token_ids, beam_size,
                                        self.length_penalty, max(1, batch_size // 8), settings)
        captions = [self.vocabulary.decode(ids) for ids in token_ids]
        for entry, caption in zip(guidance or [], captions):
            entry.caption = caption
        return captions, guidance

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
                (", no bad endings" if self.block_bad_endings else "") + \
                (f", {self.ensemble_mean} mean" if self.ensemble_mean else "")
        if self.policy is not None:
            rules += f", guided by ImageNet tags ({self.policy.settings.describe()})"
        if self.beam_size == 1:
            return "greedy" + rules
        return f"beam {self.beam_size}, length penalty {self.length_penalty}" + rules

    def encoder(self):
        """The encoder recorded in the metadata, with the same weights (and seed, when untrained), or the
        run's own fine-tuned encoder."""
        if self._encoder is None and self.fine_tuned:
            self._encoder = load_decoder(os.path.join(self.run_dir, self.fine_tuned["file"]))
        if self._encoder is None:
            note = weights_note(self.metadata["encoder"], self.weights)
            if note:
                print(note, file=sys.stderr)
            self._encoder = build_encoder(self.metadata["encoder"], self.weights, self.metadata["encoder_seed"],
                                          self.metadata.get("features", "global"))
        return self._encoder

    def encoder_agreement(self) -> float | None:
        """Mean cosine between this encoder's features of the run's reference images and the features
        the decoder was trained with; None when the run stores no reference images."""
        check = self.metadata.get("encoder_check")
        if not check:
            return None
        folder = os.path.join(self.run_dir, ENCODER_CHECK_DIR)
        paths = [os.path.join(folder, name) for name in check["images"]]
        stored = np.load(os.path.join(folder, ENCODER_CHECK_FEATURES))
        kept, features, errors = self.image_features(paths)
        if errors or len(kept) != len(paths):
            raise ValueError(f"{folder}: reference image unreadable ({errors[0] if errors else 'missing'}); "
                             f"the package is incomplete: copy it again")
        return float(cosine_similarities(features, stored).mean())

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

        from scoring.report import attention_figure

        weights = self.attention_maps(image_features[None], [caption])[0]
        pixels, _ = load_image(path, 224)  # the square picture the encoder saw, at panel size
        return attention_figure(Image.fromarray(pixels.astype(np.uint8)), caption.split(), weights)

    def caption_files(self, paths: Sequence[str], batch_size: int = 256, top: int = 1) -> Tuple[
            Dict[str, object], Dict[str, np.ndarray], List[ImageError], Dict[str, Guidance]]:
        """Caption of each readable file (with `top` > 1: its best unguided beams as (caption,
        log-probability)), the features of each readable file, the errors of the others, and with guidance
        on, what guided each file's caption (its Guidance holds the guided caption)."""
        check_top(top, self.beam_size)  # before any image is encoded
        kept, features, errors = self.image_features(paths)
        captions, guidance = self.captions_and_guidance(features, batch_size)
        if top > 1:
            captions = self.top_captions(features, top, batch_size)
        return dict(zip(kept, captions)), dict(zip(kept, features)), errors, dict(zip(kept, guidance or []))
