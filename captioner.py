"""A trained run, ready to caption: its model, vocabulary, metadata and (on demand) its encoder.

predict.py and evaluate.py meet the earlier stages only here, through the run folder's files.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np

from decoding import CaptionDecoder
from encoders import ENCODERS, ImageError, build_encoder, describe_weights, encode_pixels, load_batches
from vocabulary import Vocabulary


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
        if beam_size < 1:
            raise ValueError(f"--beam_size must be at least 1, got {beam_size}")
        self.beam_size, self.length_penalty = beam_size, length_penalty
        self._encoder = None

    def describe(self) -> str:
        return f"encoder {self.metadata['encoder']}, weights {describe_weights(self.metadata['weights'])}"

    def caption_features(self, image_features: np.ndarray, batch_size: int = 256) -> List[str]:
        return self.decoder.captions(image_features, self.vocabulary, self.beam_size, self.length_penalty, batch_size)

    def decoding(self) -> str:
        if self.beam_size == 1:
            return "greedy"
        return f"beam {self.beam_size}, length penalty {self.length_penalty}"

    def encoder(self):
        """The encoder recorded in the metadata, with the same weights (and seed, when untrained)."""
        if self._encoder is None:
            self._encoder = build_encoder(self.metadata["encoder"], self.metadata["weights"],
                                          self.metadata["encoder_seed"])
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
        dim = self.metadata["feature_dim"]
        return kept, (np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)), errors

    def caption_files(self, paths: Sequence[str], batch_size: int = 256) -> Tuple[Dict[str, str], List[ImageError]]:
        kept, features, errors = self.image_features(paths)
        return dict(zip(kept, self.caption_features(features, batch_size))), errors


def warn_if_untrained(captioner: Captioner) -> None:
    if captioner.metadata["weights"] == "none":
        print("WARNING: this run's encoder is UNTRAINED (--weights none): captions rest on colour and layout only",
              file=sys.stderr)
