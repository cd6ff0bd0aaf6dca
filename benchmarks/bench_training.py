"""Stages `train` and `scale` of benchmarks/benchmark.py: one training epoch, ours beside the tutorials' prefix
expansion, each in a child process (benchmark.py --child) so its peak memory is its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from bench_common import HERE, fit_one_epoch, header, peak_rss_mb, row, timed, training_data

# The child processes run the benchmark's own entry point.
BENCHMARK = os.path.join(HERE, "benchmark.py")


def child_train_ours(image_count: int, feature_dim: int, features_path: str, reader: str = "rows",
                     captions_per_image: int = 5, output: str = "real") -> dict:
    import keras
    from config import Config
    from inputs.feature_store import FeatureRows
    from model import build_merge_model, compile_model

    rng, vocabulary, length, rows, tokens = training_data(image_count, feature_dim, captions_per_image)
    if reader == "rows":  # what train.py uses
        features = FeatureRows(features_path, np.float32, (image_count, feature_dim))
    else:
        features = np.memmap(features_path, np.float32, "r", shape=(image_count, feature_dim))
    config = Config()
    keras.utils.set_random_seed(0)
    model = build_merge_model(config, len(vocabulary), feature_dim)
    compile_model(model, config.learning_rate)
    seconds = fit_one_epoch(model, features, rows, tokens, config.batch_size, output == "real")
    return {"captions": len(rows), "seconds": seconds, "rss_mb": peak_rss_mb()}


def child_train_prefix(image_count: int, feature_dim: int, features_path: str) -> dict:
    import keras
    from config import Config
    from tutorial_baselines import build_prefix_model, prefix_expansion

    rng, vocabulary, length, rows, tokens = training_data(image_count, feature_dim)
    features = np.asarray(np.memmap(features_path, np.float32, "r", shape=(image_count, feature_dim)))
    config = Config()
    images, prefixes, targets = prefix_expansion(features, rows, tokens, len(vocabulary))
    keras.utils.set_random_seed(0)
    model = build_prefix_model(config.units, config.embedding_dim, config.dropout, len(vocabulary), feature_dim,
                               prefixes.shape[1])
    model.fit([images[:96], prefixes[:96]], targets[:96], batch_size=config.batch_size, epochs=1, verbose=0)
    seconds, _ = timed(lambda: model.fit([images, prefixes], targets, batch_size=config.batch_size, epochs=1, verbose=0))
    return {"captions": len(rows), "samples": len(prefixes), "seconds": seconds, "rss_mb": peak_rss_mb(),
            "data_mb": (images.nbytes + prefixes.nbytes + targets.nbytes) / 2**20}


def run_child(kind: str, image_count: int, feature_dim: int, features_path: str, *extra: str) -> dict:
    output = subprocess.run([sys.executable, BENCHMARK, "--child", kind, "--images", str(image_count),
                             "--feature_dim", str(feature_dim), "--features", features_path, *extra],
                            capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def bench_training(scales: list, prefix_scales: list, feature_dim: int, work_dir: str, passes: int = 2):
    largest = max(scales + prefix_scales)
    features_path = os.path.join(work_dir, "synthetic_features.f32")
    np.random.default_rng(1).standard_normal((largest, feature_dim), dtype=np.float32).tofile(features_path)
    header(f"Training, one epoch, batch 32, merge model, real Flickr8k captions, synthetic {feature_dim}-d features "
           f"(each run a child process; RSS = its peak; best of {passes} passes)")
    # Every configuration runs once per pass, so a slow spell of this shared machine hits all of them
    # alike; each keeps its fastest pass (and the highest peak memory of its passes).
    runs = [("prefix", images, ()) for images in prefix_scales] + [("ours", images, ()) for images in scales]
    # The same epoch with the output layer applied at every padded position too (this project before
    # build_training_model), on the largest set.
    runs.append(("ours", max(scales), ("--output", "padded")))
    best = {}
    for _ in range(passes):
        for kind, images, extra in runs:
            result = run_child(kind, images, feature_dim, features_path, *extra)
            kept = best.setdefault((kind, images, extra), result)
            kept["rss_mb"] = max(kept["rss_mb"], result["rss_mb"])
            if result["seconds"] < kept["seconds"]:
                kept.update(seconds=result["seconds"])
    prefix_rate = None
    for kind, images, extra in runs:
        result = best[(kind, images, extra)]
        if kind == "prefix":
            label = f"prefix expansion ({result['samples']} samples, {result['data_mb']:.0f} MB of arrays)"
        elif extra:
            label = f"  same, output layer at padded positions too ({images} images)"
        else:
            label = f"ours: teacher forcing over whole captions ({images} images)"
        rate = row(label, result["captions"], result["seconds"], "captions",
                   prefix_rate if kind == "ours" else None, result["rss_mb"])
        if kind == "prefix":
            prefix_rate = rate


def bench_scale(image_count: int, feature_dim: int, work_dir: str, readers: list):
    """COCO-scale memory: one epoch over a synthetic store as large as COCO's (one caption per image)."""
    features_path = os.path.join(work_dir, f"synthetic_{image_count}x{feature_dim}.f32")
    if not os.path.exists(features_path) or os.path.getsize(features_path) != image_count * feature_dim * 4:
        rng = np.random.default_rng(4)
        with open(features_path, "wb") as handle:
            for start in range(0, image_count, 10000):
                count = min(10000, image_count - start)
                handle.write(rng.standard_normal((count, feature_dim), dtype=np.float32).tobytes())
    size_gb = os.path.getsize(features_path) / 2**30
    header(f"COCO-scale memory: one training epoch, merge model, a {image_count} x {feature_dim} float32 store "
           f"({size_gb:.1f} GB), one real caption per image (child processes; RSS = peak)")
    for reader in readers:
        result = run_child("ours", image_count, feature_dim, features_path, "--reader", reader,
                           "--captions_per_image", "1")
        label = {"rows": "ours: rows read on demand (train.py)", "memmap": "same, rows through a memory map"}[reader]
        row(label, result["captions"], result["seconds"], "captions", rss=result["rss_mb"])
