"""How much of a model's next-word probability sits on <unk> along its own greedy captions
(docs/training.md: why decoding and self-critical training renormalise over the writable words).

    python benchmarks/probes/unk_mass.py --run_dir runs/merge_s42 --images 200
"""
import argparse
import os
import sys

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, PROJECT)
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import numpy as np  # noqa: E402

from serving.captioner import Captioner  # noqa: E402
from inputs.feature_store import open_features  # noqa: E402
from inputs.run_folder import load_run  # noqa: E402
from inputs.vocabulary import UNK_ID  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--images", type=int, default=200, help="first N dev images")
    args = parser.parse_args()
    metadata, captions, _ = load_run(args.run_dir)
    features, rows = open_features(args.run_dir, metadata)
    names = [name for name in captions["dev"] if name in rows][:args.images]
    image_features = np.asarray(features[[rows[name] for name in names]], np.float32)
    captioner = Captioner(args.run_dir)
    steps, unk_first, unk_mass = 0, 0, []
    for image, caption in zip(image_features, captioner.caption_features(image_features, beam_size=1)):
        tokens = captioner.vocabulary.encode(caption, len(caption.split()))
        probabilities = captioner.model.predict({"image_features": image[None],
                                                 "caption_tokens": np.array([tokens[:-1]])}, verbose=0)[0]
        steps += len(probabilities)
        unk_first += int((probabilities.argmax(axis=-1) == UNK_ID).sum())
        unk_mass += list(probabilities[:, UNK_ID])
    print(f"{args.run_dir}: {len(names)} greedy dev captions, {steps} steps; <unk> the likeliest word at "
          f"{unk_first / steps:.1%} of them; mean probability of <unk> {np.mean(unk_mass):.1%}")


if __name__ == "__main__":
    main()
