"""What every stage of benchmarks/benchmark.py shares: the shared data's paths, timing and memory, the
table rows, and the training data the training and self-critical stages use."""
from __future__ import annotations

import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
sys.path.insert(0, PROJECT)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from config import quiet_tensorflow  # noqa: E402

quiet_tensorflow()  # the scripts' TensorFlow settings (oneDNN on) for both sides of every comparison

SHARED = os.path.join(os.path.dirname(PROJECT), "shared")
SHARED_IMAGES = os.path.join(SHARED, "data", "flickr8k", "Flicker8k_Dataset")
SHARED_DATA = os.path.join(SHARED, "data", "flickr8k")
MOBILENET_NOTOP = os.path.join(SHARED, "weights", "mobilenet_v2_1.0_224_from_coral_ptq_notop.weights.h5")


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: the latter keeps the parent's
    peak across fork and exec, so a child would report at least the parent's size."""
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def row(label: str, items: int, seconds: float, unit: str, reference: float | None = None, rss: float | None = None):
    rate = items / seconds
    ratio = f"{rate / reference:8.1f}x" if reference else " " * 9
    memory = f"{rss:9.0f}" if rss is not None else " " * 9
    print(f"  {label:52s} {items:7d} {unit:9s} {seconds:8.2f}s {rate:10.1f}/s {ratio} {memory}", flush=True)
    return rate


def header(title: str):
    print(f"\n## {title}\n  {'':52s} {'items':>7s} {'':9s} {'time':>9s} {'throughput':>12s} {'ratio':>9s} {'RSS MB':>9s}")


def training_data(image_count: int, feature_dim: int, captions_per_image: int = 5, seed: int = 0):
    """Real Flickr8k training captions where available (else the bundled sample's), synthetic features."""
    from data_loader import load_dataset
    from inputs.vocabulary import Vocabulary

    source = SHARED_DATA if os.path.isdir(SHARED_DATA) else os.path.join(PROJECT, "data", "sample")
    dataset = load_dataset(source)
    captions = [c for name in dataset.splits["train"] for c in dataset.captions[name][:captions_per_image]]
    vocabulary = Vocabulary.build(captions, 5)
    length = min(max(len(c.split()) for c in captions), 40)
    rng = np.random.default_rng(seed)
    picked = [captions[i % len(captions)] for i in range(image_count * captions_per_image)]
    tokens = np.stack([vocabulary.encode(c, length) for c in picked])
    rows = np.repeat(np.arange(image_count), captions_per_image)
    return rng, vocabulary, length, rows, tokens


def fit_one_epoch(model, features, rows, tokens, batch_size: int, real_positions: bool = True) -> float:
    """Seconds for one epoch as train.py trains (the output layer at real positions only), after a
    warm-up; `real_positions` False fits the captioner itself, with padded targets weighted 0."""
    from data_loader import caption_batches
    from model import build_training_model

    fitted = build_training_model(model) if real_positions else model
    batches = caption_batches(features, rows, tokens, batch_size, True, 0, flat_targets=real_positions)
    fitted.fit(batches.take(3), epochs=1, verbose=0)  # warm-up: tracing and graph building
    seconds, _ = timed(fitted.fit, batches, None, None, 1, 0)
    return seconds
