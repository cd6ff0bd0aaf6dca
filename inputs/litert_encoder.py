"""The frozen Keras encoder converted to LiteRT, for feature extraction (`preprocess.py --extract_with litert`).

On a 2-core CPU LiteRT's XNNPACK kernels ran MobileNetV2 2.5x as fast as TensorFlow, with features equal
to TensorFlow's to a cosine of 1.000000 (BENCHMARKS.md, "The levers"). The conversion goes through a
temporary folder; the converted model is kept in memory for the life of the process, never saved.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np


class LiteRTEncoder:
    """Stands in for the Keras encoder wherever `inputs.encoders.encode_pixels` is called: the same
    `output_shape`, and `predict_on_batch` on batches of pixels (0-255) of any length."""

    def __init__(self, encoder_model):
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter

        self.output_shape = encoder_model.output_shape
        # Through a SavedModel written quietly: from_keras_model would print every captured variable.
        with tempfile.TemporaryDirectory() as folder:
            encoder_model.export(folder, format="tf_saved_model", verbose=False)
            flatbuffer = tf.lite.TFLiteConverter.from_saved_model(folder).convert()
        interpreter = Interpreter(model_content=flatbuffer, num_threads=os.cpu_count())
        self._runner = interpreter.get_signature_runner()
        self._interpreter = interpreter  # the runner needs its interpreter alive
        self._input_name = next(iter(self._runner.get_input_details()))

    def predict_on_batch(self, pixels: np.ndarray) -> np.ndarray:
        # The signature runner resizes its input to each batch's length (the last one is shorter).
        outputs = self._runner(**{self._input_name: np.asarray(pixels, np.float32)})
        return next(iter(outputs.values()))


def check_extractor(extract_with: str) -> None:
    """Refuses, before anything is extracted or written, a runtime that cannot run here."""
    if extract_with not in ("tensorflow", "litert"):
        raise ValueError(f"--extract_with {extract_with}: choose tensorflow or litert")
    if extract_with == "litert":
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError as error:
            raise ValueError(f"--extract_with litert needs the ai-edge-litert package, which does not load here "
                             f"({error}): pip install -r requirements.txt, or extract with TensorFlow (leave out "
                             f"--extract_with)") from None


def open_extractor(encoder_model, extract_with: str):
    """The model extraction runs: the Keras encoder itself, or its LiteRT conversion."""
    if extract_with == "tensorflow":
        return encoder_model
    check_extractor(extract_with)
    return LiteRTEncoder(encoder_model)
