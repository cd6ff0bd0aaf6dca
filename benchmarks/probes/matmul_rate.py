"""How fast TensorFlow multiplies the output layer's matrices here (700 x 256 times 256 x 2,533:
batch 32 x about 22 positions, against a 2,533-word vocabulary), in GFLOP/s:

    python benchmarks/probes/matmul_rate.py 1     # the argument is TF_ENABLE_ONEDNN_OPTS
"""
import os
import sys
import time

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["TF_ENABLE_ONEDNN_OPTS"] = sys.argv[1]

import tensorflow as tf  # noqa: E402

hidden = tf.random.normal([700, 256])
weights = tf.random.normal([256, 2533])
started = time.perf_counter()
for _ in range(100):
    logits = tf.matmul(hidden, weights)
    hidden = hidden + 1e-6 * logits[:, :256]  # each product depends on the last: none can be skipped
_ = hidden.numpy()
seconds = time.perf_counter() - started
print(sys.argv[1], "GFLOP/s", 100 * 2 * 700 * 256 * 2533 / seconds / 1e9)
