"""An encoder fine-tuning epoch (train.py --fine_tune_encoder) beside a frozen-feature epoch, same images.

    python benchmarks/fine_tune_speed.py                # 640 Flickr8k training images, 5 captions each
    python benchmarks/fine_tune_speed.py --images 6000  # a whole Flickr8k epoch per side (slow)

One epoch over the same real Flickr8k training images and their captions, merge decoder with the default
sizes, MobileNetV2 with the shared ImageNet weights (../shared/weights), three ways:
- frozen: train.py's cross-entropy epoch on cached features (batch 32 captions);
- fine-tuning as training/finetune.py does it: 16 images per batch, each image read and encoded once for all its captions;
- fine-tuning per caption, as a pipeline of (image, caption) pairs would: each caption's image read and
  encoded again, 32 pairs per batch.
The fine-tuned layers are the default 8. Each side runs after a warm-up; the sides alternate, and each
keeps its best of `--passes` passes.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from benchmark import MOBILENET_NOTOP, SHARED_DATA, fit_one_epoch, header, row, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--passes", type=int, default=2)
    arguments = parser.parse_args()
    if not (os.path.isdir(SHARED_DATA) and os.path.isfile(MOBILENET_NOTOP)):
        sys.exit(f"needs the shared Flickr8k images and MobileNetV2 weights: {SHARED_DATA}, {MOBILENET_NOTOP}")
    import keras
    import tensorflow as tf

    from config import Config
    from data_loader import load_dataset
    from inputs.encoders import build_encoder, encode_pixels
    from inputs.images import load_batches
    from training.encoder_tuning import JointStep, captions_per_image, image_caption_batches, make_top_trainable
    from model import build_model, compile_model
    from inputs.vocabulary import Vocabulary

    warnings.filterwarnings("ignore", message=".*shuffle=True.*was passed")
    config = Config(encoder="mobilenet_v2")
    dataset = load_dataset(SHARED_DATA)
    names = dataset.splits["train"][:arguments.images]
    captions = {name: dataset.captions[name] for name in names}
    vocabulary = Vocabulary.build([c for name in dataset.splits["train"] for c in dataset.captions[name]], 5)
    length = 36
    tokens = captions_per_image(names, captions, vocabulary, length)
    paths = [dataset.image_path(name) for name in names]
    caption_count = int((tokens[:, :, 0] != 0).sum())
    print(f"# command: python benchmarks/fine_tune_speed.py --images {arguments.images} --passes {arguments.passes}; "
          f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}")
    header(f"Encoder fine-tuning epoch beside a frozen-feature epoch: {len(names)} Flickr8k training images, "
           f"{caption_count} captions, merge decoder, MobileNetV2 (shared ImageNet weights), top 8 layers trained")

    keras.utils.set_random_seed(0)
    frozen = build_encoder("mobilenet_v2", MOBILENET_NOTOP)
    features = np.concatenate([encode_pixels(frozen, pixels) for _, pixels, _, _ in load_batches(paths, 224, 32)])
    rows = np.repeat(np.arange(len(names)), tokens.shape[1])
    flat_tokens = tokens.reshape(-1, tokens.shape[2])

    def fresh_pair():
        decoder = build_model(config, len(vocabulary), (1280,))
        compile_model(decoder, config.fine_tune_learning_rate)
        encoder = build_encoder("mobilenet_v2", MOBILENET_NOTOP)
        make_top_trainable(encoder, config.fine_tune_layers)
        encoder.compile(optimizer=keras.optimizers.Adam(config.encoder_learning_rate))
        return JointStep(encoder, decoder)

    def epoch(step, pipeline_paths, pipeline_tokens, images_per_batch, limit=None):
        batches = image_caption_batches(pipeline_paths, pipeline_tokens, 224, images_per_batch, 0, {})
        for pixels, batch_tokens in batches.take(limit) if limit else batches:
            step.step(pixels, batch_tokens)

    xe_model = build_model(config, len(vocabulary), (1280,))
    compile_model(xe_model, config.learning_rate)
    per_image, per_caption = fresh_pair(), fresh_pair()
    # Per caption: every (image, caption) pair is its own "image" with one caption.
    pair_paths = [path for path, image_tokens in zip(paths, tokens) for caption in image_tokens if caption[0]]
    pair_tokens = flat_tokens[flat_tokens[:, 0] != 0][:, None, :]
    epoch(per_image, paths, tokens, 16, 2)  # warm-up: tracing
    epoch(per_caption, pair_paths, pair_tokens, 32, 2)
    times = {"frozen": [], "per_image": [], "per_caption": []}
    for _ in range(arguments.passes):
        times["frozen"].append(fit_one_epoch(xe_model, features, rows[flat_tokens[:, 0] != 0],
                                             flat_tokens[flat_tokens[:, 0] != 0], config.batch_size))
        times["per_image"].append(timed(epoch, per_image, paths, tokens, 16)[0])
        times["per_caption"].append(timed(epoch, per_caption, pair_paths, pair_tokens, 32)[0])
    frozen_rate = row("frozen features: cross-entropy epoch, batch 32 captions", caption_count,
                      min(times["frozen"]), "captions")
    row("fine-tuning, 16 images x all captions (finetune.py)", caption_count, min(times["per_image"]), "captions",
        frozen_rate)
    row("fine-tuning per caption, 32 (image, caption) pairs", caption_count, min(times["per_caption"]), "captions",
        frozen_rate)
    print(f"    fine-tuning / frozen epoch time: {min(times['per_image']) / min(times['frozen']):.1f}x; per caption / "
          f"per image: {min(times['per_caption']) / min(times['per_image']):.1f}x")
    print("    (every pass, s: " + "; ".join(f"{side} " + ", ".join(f"{t:.1f}" for t in values)
                                            for side, values in times.items()) + ")")


if __name__ == "__main__":
    main()
