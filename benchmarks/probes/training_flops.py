"""The matrix arithmetic of one training epoch of the default merge model over the benchmark's 30,000
captions, counting the padding that shuffled batches of 32 carry (BENCHMARKS.md, "Why one epoch ..."):

    python benchmarks/probes/training_flops.py
"""
import os
import sys

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(BENCHMARKS))
sys.path.insert(0, BENCHMARKS)

import numpy as np  # noqa: E402

from benchmark import training_data  # noqa: E402

rng, vocabulary, length, rows, tokens = training_data(6000, 4096)
positions = (tokens != 0).sum(1) - 1  # <start> w1 .. wn predicts w1 .. wn <end>
order = np.random.default_rng(0).permutation(len(positions))
padded = sum(positions[order[i:i + 32]].max() * len(order[i:i + 32]) for i in range(0, len(order), 32))
vocabulary_size, units, embedding = len(vocabulary), 256, 256
print("captions", len(positions), "vocabulary", vocabulary_size, "real positions/caption",
      positions.sum() / len(positions), "padded", padded / len(positions))
# Multiply-add = 2 operations; x3 for the forward product and the backward pass's two products.
output = 2 * padded * units * vocabulary_size * 3
projection = 2 * padded * units * units * 3
lstm = 2 * padded * (embedding + units) * 4 * units * 3
print("TFLOP per epoch: output %.2f, projection %.2f, lstm %.2f, total %.2f"
      % (output / 1e12, projection / 1e12, lstm / 1e12, (output + projection + lstm) / 1e12))
