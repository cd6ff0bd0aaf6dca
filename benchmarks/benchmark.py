"""Side-by-side speed and memory of this pipeline against the tutorials' usual approach.

    python benchmarks/benchmark.py                 # all three stages
    python benchmarks/benchmark.py --stages decode # one stage
    python benchmarks/benchmark.py --stages attention  # the attention decoder beside the merge decoder
    python benchmarks/benchmark.py --stages scale      # memory of one epoch over a COCO-sized store
    python benchmarks/benchmark.py --stages scst       # a self-critical epoch beside a cross-entropy epoch

Both sides run in this process (or in child processes of it, for peak memory), on the same images,
captions, features and weights. Prints one table per stage; BENCHMARKS.md holds the latest output.
Each stage is a module of its own: bench_extraction.py, bench_training.py (train, scale),
bench_decoding.py (decode, attention), bench_scst.py; bench_common.py holds what they share.
"""
from __future__ import annotations

import argparse
import json
import os
import platform

from bench_common import PROJECT  # noqa: F401  (first: puts the project on the path, quiets TensorFlow)
from bench_decoding import bench_attention, bench_decoding
from bench_extraction import bench_extraction
from bench_scst import bench_scst
from bench_training import bench_scale, bench_training, child_train_ours, child_train_prefix


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", default=["extract", "train", "decode"])
    parser.add_argument("--work_dir", default="/tmp/caption_benchmark")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--feature_dim", type=int, default=4096, help=argparse.SUPPRESS)
    parser.add_argument("--features", help=argparse.SUPPRESS)
    parser.add_argument("--reader", default="rows", help=argparse.SUPPRESS)
    parser.add_argument("--captions_per_image", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--output", default="real", help=argparse.SUPPRESS)
    parser.add_argument("--scale_readers", nargs="+", default=["rows", "memmap"],
                        help="for --stages scale: how the store is read (rows = train.py's way, memmap = a memory map)")
    arguments = parser.parse_args()
    if arguments.child == "ours":
        print(json.dumps(child_train_ours(arguments.images, arguments.feature_dim, arguments.features,
                                          arguments.reader, arguments.captions_per_image, arguments.output)))
        return
    if arguments.child:
        print(json.dumps(child_train_prefix(arguments.images, arguments.feature_dim, arguments.features)))
        return
    os.makedirs(arguments.work_dir, exist_ok=True)
    import tensorflow as tf
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, TensorFlow {tf.__version__}")
    print(f"# command: python benchmarks/benchmark.py --stages {' '.join(arguments.stages)}")
    if "extract" in arguments.stages:
        bench_extraction(256, {"mobilenet_v2": 64, "vgg16": 16}, {"mobilenet_v2": 5, "vgg16": 2})
    if "train" in arguments.stages:
        bench_training([375, 1500, 6000], [100, 400], 4096, arguments.work_dir)
    if "decode" in arguments.stages:
        bench_decoding(1000, 5, 2, 2000, 16)
    if "attention" in arguments.stages:
        bench_attention(1200, 1000, 3, arguments.work_dir)
    if "scst" in arguments.stages:
        bench_scst(6000, 2)
    if "scale" in arguments.stages:
        bench_scale(120_000, 4096, arguments.work_dir, arguments.scale_readers)


if __name__ == "__main__":
    main()
