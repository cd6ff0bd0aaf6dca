"""Checks the Keras EfficientNet-Lite (inputs/efficientnet_lite.py) against the PyTorch reference
implementation, PyPI's efficientnet-lite-pytorch, on the same weights and the same input tensors.

    python benchmarks/probes/efficientnet_reference.py [--venv DIR] [--images DIR] [--encoders ...]

PyTorch stays out of the project's environment: the reference runs in a scratch virtual environment
(`--venv`, made on first use with torch 2.13.0 and the reference package, installed without its own
dependencies). Both networks read the very same scaled pixels: the project's own image loader and
scaling, handed to PyTorch as an array. Prints, per encoder, the largest difference of the logits
and of the probabilities, and how often the top class agrees.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, PROJECT)

from config import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

from inputs.efficientnet_lite import VARIANTS, network_with_weights, package_weight_file, scale_pixels  # noqa: E402
from inputs.encoders import keras_cache_dir  # noqa: E402
from inputs.images import IMAGE_SUFFIXES, load_image  # noqa: E402

REFERENCE_PACKAGES = ["efficientnet-lite-pytorch==0.1.0"] + [variant.package + "==0.1.0" for variant in VARIANTS.values()]
# Runs inside the scratch environment: the reference model, fed the arrays the project wrote, returns logits.
REFERENCE_CODE = """
import sys, numpy as np, torch
from efficientnet_lite_pytorch import EfficientNet
name, weights, inputs, outputs = sys.argv[1:5]
model = EfficientNet.from_pretrained(name, weights_path=weights)
model.eval()
with torch.no_grad():
    logits = model(torch.from_numpy(np.load(inputs))).numpy()
np.save(outputs, logits)
"""


def scratch_environment(folder: str) -> str:
    """The scratch environment's Python, created with the reference packages when missing."""
    python = os.path.join(folder, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", folder], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "torch==2.13.0", "numpy"], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *REFERENCE_PACKAGES], check=True)
    return python


def default_images() -> list:
    import matplotlib

    sample = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    checks = glob.glob(os.path.join(PROJECT, "pretrained", "*", "encoder_check", "*.jpg"))
    shapes = sorted(glob.glob(os.path.join(PROJECT, "data", "sample", "Flicker8k_Dataset", "*.jpg")))[:4]
    return [sample] + sorted(checks) + shapes


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(1, keepdims=True))
    return exponentials / exponentials.sum(1, keepdims=True)


def compare(name: str, python: str, paths: list) -> None:
    variant = VARIANTS[name]
    pixels = np.stack([load_image(path, variant.input_size)[0] for path in paths])
    scaled = np.asarray(scale_pixels(pixels), np.float32)
    import keras

    network = network_with_weights(name, "imagenet", keras_cache_dir())
    pooled = keras.Model(network.input, network.get_layer("avg_pool").output).predict_on_batch(scaled)
    kernel, bias = network.get_layer("predictions").get_weights()
    logits = np.asarray(pooled, np.float64) @ kernel.astype(np.float64) + bias
    with tempfile.TemporaryDirectory() as folder:
        inputs, outputs = os.path.join(folder, "inputs.npy"), os.path.join(folder, "logits.npy")
        np.save(inputs, scaled.transpose(0, 3, 1, 2).copy())  # PyTorch reads channels first
        subprocess.run([python, "-c", REFERENCE_CODE, name.replace("_", "-"), package_weight_file(name), inputs,
                        outputs], check=True)
        reference_logits = np.load(outputs).astype(np.float64)
    probabilities, reference = softmax(logits), softmax(reference_logits)
    print(f"{name}: {len(paths)} images at {variant.input_size} px; largest |logit difference| "
          f"{np.abs(logits - reference_logits).max():.2e} (logits span {reference_logits.min():.1f} to "
          f"{reference_logits.max():.1f}); largest |probability difference| "
          f"{np.abs(probabilities - reference).max():.2e}; top class agrees on "
          f"{(probabilities.argmax(1) == reference.argmax(1)).sum()}/{len(paths)}; reference top-1 probabilities "
          f"{', '.join(f'{p:.3f}' for p in reference.max(1))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "efficientnet_reference_env"))
    parser.add_argument("--images", default="", help="a folder of images (default: photos the project has)")
    parser.add_argument("--encoders", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    paths = (sorted(os.path.join(args.images, name) for name in os.listdir(args.images)
                    if name.lower().endswith(IMAGE_SUFFIXES)) if args.images else default_images())
    python = scratch_environment(args.venv)
    for name in args.encoders:
        compare(name, python, paths)


if __name__ == "__main__":
    main()
