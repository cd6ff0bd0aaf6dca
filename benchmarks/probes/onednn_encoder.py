"""MobileNetV2 alone on one 32-image batch, three ways of calling it, two rounds; run it once with
oneDNN on and once off to compare (the encoder rows of BENCHMARKS.md's oneDNN paragraph):

    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/probes/onednn_encoder.py
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/probes/onednn_encoder.py
"""
import os
import sys
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, PROJECT)
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from inputs.encoders import build_encoder  # noqa: E402

encoder = build_encoder("mobilenet_v2", "none")
pixels = np.random.default_rng(0).uniform(0, 255, (32, 224, 224, 3)).astype(np.float32)
called = tf.function(lambda batch: encoder(batch, training=False))
bare = keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3))
bare_called = tf.function(lambda batch: bare(batch, training=False))


def images_per_second(name, encode, passes=5):
    encode(pixels)
    started = time.perf_counter()
    for _ in range(passes):
        np.asarray(encode(pixels))
    print(name, round(32 * passes / (time.perf_counter() - started), 1), flush=True)


print("TF_ENABLE_ONEDNN_OPTS =", os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset)"))
for _ in range(2):
    images_per_second("predict_on_batch", encoder.predict_on_batch)
    images_per_second("tf.function call", called)
    images_per_second("bare MobileNetV2, tf.function", bare_called)
