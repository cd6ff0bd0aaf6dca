"""MobileNetV2 feature extraction through TensorFlow (preprocess.py's default) and through LiteRT's
interpreter (XNNPACK, float32, the same Keras model converted: `--extract_with litert`), side by side on the same decoded images:
throughput, and how close the features are (cosine per image).

    python benchmarks/probes/litert_encoder.py WEIGHTS [IMAGES] [BATCH]    # default 512 images, batch 32
"""
import os
import sys
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, PROJECT)

from config import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import numpy as np  # noqa: E402

from data_loader import load_dataset  # noqa: E402
from inputs.encoders import build_encoder, encode_pixels  # noqa: E402
from inputs.images import load_batches  # noqa: E402
from inputs.litert_encoder import LiteRTEncoder  # noqa: E402
from serving.encoder_check import cosine_similarities  # noqa: E402

SHARED = os.path.join(os.path.dirname(PROJECT), "shared", "data", "flickr8k")


def main() -> None:
    weights = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    dataset = load_dataset(SHARED)
    paths = [dataset.image_path(name) for name in dataset.splits["train"][:count]]
    pixels = np.concatenate([batch_pixels for _, batch_pixels, _, _ in load_batches(paths, 224, 64)])
    encoder = build_encoder("mobilenet_v2", weights)
    lite_encoder = LiteRTEncoder(encoder)  # what preprocess.py --extract_with litert runs
    sides = (("tensorflow", encoder), ("litert", lite_encoder))
    results, seconds = {}, {"tensorflow": [], "litert": []}
    for side, model in sides:
        encode_pixels(model, pixels[:batch])  # warm-up
    for _ in range(2):  # alternating passes; each keeps its best
        for side, model in sides:
            started = time.perf_counter()
            results[side] = np.concatenate([encode_pixels(model, pixels[start:start + batch])
                                            for start in range(0, len(pixels), batch)])
            seconds[side].append(time.perf_counter() - started)
    cosines = cosine_similarities(results["tensorflow"], results["litert"])
    print(f"{len(pixels)} Flickr8k training images, batch {batch}, decoded beforehand; best of 2 alternating passes")
    for side in ("tensorflow", "litert"):
        print(f"  {side:10s} {len(pixels) / min(seconds[side]):7.1f} images/s  "
              f"(passes {', '.join(f'{value:.2f}' for value in seconds[side])} s)")
    print(f"  feature cosine, LiteRT against TensorFlow: mean {cosines.mean():.6f}, min {cosines.min():.6f}")


if __name__ == "__main__":
    main()
