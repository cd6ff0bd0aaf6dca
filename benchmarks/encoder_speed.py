"""Feature extraction speed of each encoder, side by side in one process: MobileNetV2 and EfficientNet-Lite0/1/2.

    python benchmarks/encoder_speed.py [--images 512] [--rounds 3] [--encoders ...]

For each encoder and each runtime (TensorFlow; the same model converted to LiteRT, as
`preprocess.py --extract_with litert` runs it): the encoder alone on pixels already in memory, and the
whole extraction as preprocess.py runs it (the tf.data image pipeline decoding JPEGs, then the encoder),
batches of 32. The encoders take turns round after round and each keeps its best time, so a slow
moment of this shared machine lands on one round of every encoder, not on one encoder. Weights are
ImageNet's (MobileNetV2's from ../shared, when there; else untrained, which runs at the same speed).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)

import numpy as np  # noqa: E402

from config import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

from inputs.encoders import ENCODERS, build_encoder, encode_pixels  # noqa: E402
from inputs.images import load_batches, load_image  # noqa: E402
from inputs.litert_encoder import LiteRTEncoder  # noqa: E402

SHARED = os.path.join(os.path.dirname(PROJECT), "shared")
IMAGES = os.path.join(SHARED, "data", "flickr8k", "Flicker8k_Dataset")
MOBILENET_NOTOP = os.path.join(SHARED, "weights", "mobilenet_v2_1.0_224_from_coral_ptq_notop.weights.h5")
ENCODER_NAMES = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def weights_of(encoder: str) -> str:
    if encoder != "mobilenet_v2":
        return "imagenet"  # the installed package: no download
    return MOBILENET_NOTOP if os.path.exists(MOBILENET_NOTOP) else "none"


def best_seconds(function, rounds: list) -> float:
    started = time.perf_counter()
    function()
    rounds.append(time.perf_counter() - started)
    return min(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--encoders", nargs="+", default=list(ENCODER_NAMES), choices=list(ENCODERS))
    args = parser.parse_args()
    folder = IMAGES if os.path.isdir(IMAGES) else os.path.join(PROJECT, "data", "sample", "Flicker8k_Dataset")
    paths = [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:args.images]]
    print(f"# {len(paths)} images from {folder}; {platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"CPUs; load average {os.getloadavg()[0]:.2f} at the start")
    runners, pixels = {}, {}
    for encoder in args.encoders:
        model = build_encoder(encoder, weights_of(encoder))
        size = ENCODERS[encoder].input_size
        pixels[encoder] = np.stack([load_image(path, size)[0] for path in paths])
        runners[encoder] = {"tensorflow": model, "litert": LiteRTEncoder(model)}
        for runner in runners[encoder].values():  # warm-up: tracing and the first allocations
            encode_pixels(runner, pixels[encoder][:32])
    timings = {(encoder, runtime, part): [] for encoder in args.encoders for runtime in ("tensorflow", "litert")
               for part in ("alone", "whole")}
    for _ in range(args.rounds):
        for encoder in args.encoders:
            size = ENCODERS[encoder].input_size
            for runtime, runner in runners[encoder].items():
                best_seconds(lambda: [encode_pixels(runner, pixels[encoder][start:start + 32])
                                      for start in range(0, len(paths), 32)], timings[(encoder, runtime, "alone")])
                best_seconds(lambda: [encode_pixels(runner, batch) for _, batch, _, _ in load_batches(paths, size, 32)],
                             timings[(encoder, runtime, "whole")])
    print(f"\n| encoder | input | runtime | encoder alone, images/s | whole extraction, images/s | "
          f"whole, against MobileNetV2 with the same runtime |\n| --- | --- | --- | --- | --- | --- |")
    for encoder in args.encoders:
        for runtime in ("tensorflow", "litert"):
            alone = len(paths) / min(timings[(encoder, runtime, "alone")])
            whole = len(paths) / min(timings[(encoder, runtime, "whole")])
            base = timings.get(("mobilenet_v2", runtime, "whole"))
            ratio = f"{whole / (len(paths) / min(base)):.2f}x" if base else ""
            size = ENCODERS[encoder].input_size
            print(f"| {encoder} | {size} x {size} | {runtime} | {alone:.0f} | {whole:.0f} | {ratio} |")
    print(f"\n# best of {args.rounds} rounds; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
