"""How much a decoder loses when its encoder's features drift: the evidence behind the encoder
check's threshold (encoder_check.ENCODER_CHECK_THRESHOLD, the pretrained package's README).

    python benchmarks/probes/encoder_mismatch.py --run_dir runs/merge_s42_scst

Two kinds of drift on the run's stored dev features, each scored by the greedy dev BLEU-4 and
CIDEr-D of the run's model:
- Gaussian noise scaled to each feature vector's norm, at growing strengths;
- the same encoder's weights rounded to fewer bits (per output channel, as a different conversion
  of the same network would differ), recomputed from the dev images when --weights and
  --data_dir are given. An untrained encoder (--weights none) is the far end.
Each row: mean and lowest cosine to the stored features, then the scores.
"""
import argparse
import os
import sys

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, PROJECT)
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from serving.captioner import Captioner  # noqa: E402
from serving.encoder_check import cosine_similarities  # noqa: E402
from inputs.encoders import build_encoder, encode_pixels  # noqa: E402
from inputs.images import load_batches  # noqa: E402
from inputs.feature_store import open_features  # noqa: E402
from scoring.metrics import coco_scores  # noqa: E402
from inputs.run_folder import load_run  # noqa: E402


def round_weights(encoder, bits: int, share: float = 1.0) -> None:
    """Moves every kernel `share` of the way to its rounding to 2**(bits-1)-1 levels per output
    channel, in place (share 1: the rounded kernel)."""
    levels = 2 ** (bits - 1) - 1
    for variable in encoder.weights:
        if "kernel" not in variable.path:
            continue
        value = np.asarray(variable)
        # Output channels: the last axis, except a depthwise kernel's (height, width, channels, 1).
        channel_axis = value.ndim - 2 if "depthwise" in variable.path else value.ndim - 1
        scale = np.abs(value).max(axis=tuple(a for a in range(value.ndim) if a != channel_axis),
                                  keepdims=True) / levels
        scale[scale == 0] = 1
        variable.assign(value + share * (np.round(value / scale) * scale - value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--weights", default="", help="the encoder weights file the run was trained with")
    parser.add_argument("--data_dir", default="", help="dataset folder, to recompute dev features from images")
    parser.add_argument("--images", type=int, default=1000, help="dev images used")
    parser.add_argument("--only", default="", help="only the weight rows whose label contains this")
    args = parser.parse_args()
    metadata, captions, _ = load_run(args.run_dir)
    features, rows = open_features(args.run_dir, metadata)
    names = [name for name in captions["dev"] if name in rows][:args.images]
    stored = np.asarray(features[[rows[name] for name in names]], np.float32)
    references = [captions["dev"][name] for name in names]
    captioner = Captioner(args.run_dir)

    def row(label: str, drifted: np.ndarray) -> None:
        similarity = cosine_similarities(stored, drifted)
        scores = coco_scores(references, captioner.caption_features(drifted, beam_size=1),
                             metrics=("BLEU-4", "CIDEr-D")).corpus
        print(f"| {label} | {similarity.mean():.4f} | {similarity.min():.4f} | {scores['BLEU-4']:.4f} | "
              f"{scores['CIDEr-D']:.4f} |", flush=True)

    print(f"{len(names)} dev images of {args.run_dir}\n")
    print("| features | mean cosine | lowest cosine | BLEU-4 | CIDEr-D |\n| --- | ---: | ---: | ---: | ---: |")
    row("stored", stored)
    noise = np.random.default_rng(0).standard_normal(stored.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    for strength in (0.05, 0.1, 0.15, 0.2, 0.3, 0.5):
        row(f"Gaussian noise, {strength:.2f} of the norm",
            stored + strength * np.linalg.norm(stored, axis=1, keepdims=True) * noise)
    if not (args.weights and args.data_dir):
        return
    paths = [os.path.join(args.data_dir, "Flicker8k_Dataset", name) for name in names]
    for label, weights, bits, share in (("weights as trained, recomputed", args.weights, 0, 0),
                                        ("weights rounded to 8 bits", args.weights, 8, 1),
                                        ("weights a quarter of the way to 7 bits", args.weights, 7, 0.25),
                                        ("weights half of the way to 7 bits", args.weights, 7, 0.5),
                                        ("weights rounded to 7 bits", args.weights, 7, 1),
                                        ("weights rounded to 6 bits", args.weights, 6, 1),
                                        ("weights rounded to 5 bits", args.weights, 5, 1),
                                        ("weights rounded to 4 bits", args.weights, 4, 1),
                                        ("untrained encoder (--weights none)", "none", 0, 0)):
        if args.only and args.only not in label:
            continue
        keras.utils.set_random_seed(7)
        encoder = build_encoder(metadata["encoder"], weights, metadata["encoder_seed"])
        if bits:
            round_weights(encoder, bits, share)
        vectors = [encode_pixels(encoder, pixels) for _, pixels, _, _ in load_batches(paths, 224, 64)]
        row(label, np.concatenate(vectors).astype(np.float32))


if __name__ == "__main__":
    main()
