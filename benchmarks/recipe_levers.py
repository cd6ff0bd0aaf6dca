"""The training levers behind the fast recipe, each a train.py run on one preprocessed Flickr8k folder, and
one table of what each reached and how long it took (BENCHMARKS.md, "Time to a model").

    python benchmarks/recipe_levers.py run --base runs/base --data_dir ../shared/data/flickr8k [--only NAME ...]
    python benchmarks/recipe_levers.py table --base runs/base

`runs/base` is a preprocessed run folder (preprocess.py --encoder mobilenet_v2); each cross-entropy lever
trains a new run on its features (`--features_from`), each self-critical lever continues a copy of the
cross-entropy run it names. The table reads every run's history.csv: its epochs, their summed seconds
(each epoch's own wall time, dev scoring included), and the best greedy dev CIDEr-D with the epoch and
the time it was reached at. Run them one at a time on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)

from training.history import read_history  # noqa: E402

COSINE_128 = ["--batch_size", "128", "--learning_rate", "2e-3", "--lr_schedule", "cosine", "--warmup_epochs", "0.5"]
PLATEAU_32 = ["--batch_size", "32", "--learning_rate", "5e-4", "--lr_schedule", "plateau", "--dropout", "0.5"]


def scst_from(source: str, rate: str, epochs: int = 12, seed: int = 0, note: str = "") -> tuple:
    """A self-critical lever: `epochs` epochs on a cosine peaking at `rate`, from `source`'s cross-entropy
    model, with every epoch run (no early stop) and `seed` (0: the default)."""
    length = "" if epochs == 12 else f" over a {epochs}-epoch cosine"
    what = f"self-critical at {rate}{length}, after {source}'s cross-entropy phase"
    what += f", --seed {seed}" if seed else ""
    flags = (["--seed", str(seed)] if seed else []) + ["--scst_learning_rate", rate, "--scst_epochs", str(epochs),
                                                       "--scst_patience", "0"]
    return what + note, source, flags


# name -> (what it is, the cross-entropy run it continues or "" for a new one, train.py flags)
LEVERS = {
    "xe_b32": ("cross-entropy, batch 32, 5e-4, halved on plateaus, dropout 0.5 (the old default)", "",
               PLATEAU_32 + ["--epochs", "12", "--patience", "5"]),
    "xe_b128_cos6": ("cross-entropy, batch 128, 2e-3, warm-up 0.5 epoch, cosine over 6 epochs, dropout 0.5", "",
                     COSINE_128 + ["--epochs", "6", "--dropout", "0.5"]),
    "xe_b256_cos5": ("cross-entropy, batch 256, 3e-3, warm-up 0.5 epoch, cosine over 5 epochs, dropout 0.5", "",
                     ["--batch_size", "256", "--learning_rate", "3e-3", "--lr_schedule", "cosine", "--warmup_epochs",
                      "0.5", "--epochs", "5", "--dropout", "0.5"]),
    "xe_b128_cos8": ("cross-entropy, batch 128, cosine over 8 epochs, dropout 0.5", "",
                     COSINE_128 + ["--epochs", "8", "--dropout", "0.5"]),
    "xe_b128_cos6_d03": ("cross-entropy, batch 128, cosine over 6 epochs, dropout 0.3 (the fast recipe)", "",
                         COSINE_128 + ["--epochs", "6", "--dropout", "0.3"]),
    "xe_b128_cos5_d03": ("cross-entropy, batch 128, cosine over 5 epochs, dropout 0.3", "",
                         COSINE_128 + ["--epochs", "5", "--dropout", "0.3"]),
    "xe_b128_cos6_d02": ("cross-entropy, batch 128, cosine over 6 epochs, dropout 0.2", "",
                         COSINE_128 + ["--epochs", "6", "--dropout", "0.2"]),
    "scst_b16_lr1e-4": ("self-critical, 16 images x 5 samples, 1e-4, constant (the long MobileNetV2 recipe's)", "xe_b128_cos6",
                        ["--scst_batch_size", "16", "--scst_learning_rate", "1e-4", "--scst_epochs", "3",
                         "--lr_schedule", "plateau"]),
    "scst_b32_lr2e-4": ("self-critical, 32 images, 2e-4, constant", "xe_b128_cos6",
                        ["--scst_batch_size", "32", "--scst_learning_rate", "2e-4", "--scst_epochs", "4",
                         "--lr_schedule", "plateau"]),
    "scst_b64_lr4e-4": ("self-critical, 64 images, 4e-4, constant", "xe_b128_cos6",
                        ["--scst_batch_size", "64", "--scst_learning_rate", "4e-4", "--scst_epochs", "4",
                         "--lr_schedule", "plateau"]),
    "scst_b64_lr4e-4_cos10": ("self-critical, 64 images, 4e-4, cosine over 10 epochs", "xe_b128_cos6",
                              ["--scst_batch_size", "64", "--scst_learning_rate", "4e-4", "--scst_epochs", "10",
                               "--lr_schedule", "cosine", "--scst_patience", "0"]),
    "scst_b64_lr4e-4_cos14": ("self-critical, 64 images, 4e-4, cosine over 14 epochs", "xe_b128_cos6",
                              ["--scst_batch_size", "64", "--scst_learning_rate", "4e-4", "--scst_epochs", "14",
                               "--lr_schedule", "cosine", "--scst_patience", "0"]),
    "scst_b128_lr8e-4_cos14": ("self-critical, 128 images, 8e-4, cosine over 14 epochs", "xe_b128_cos6",
                               ["--scst_batch_size", "128", "--scst_learning_rate", "8e-4", "--scst_epochs", "14",
                                "--lr_schedule", "cosine", "--scst_patience", "0"]),
    "scst_d03_b64_cos12": ("self-critical, 64 images, 4e-4, cosine over 12 epochs, after dropout 0.3",
                           "xe_b128_cos6_d03", ["--scst_batch_size", "64", "--scst_learning_rate", "4e-4",
                                                "--scst_epochs", "12", "--lr_schedule", "cosine",
                                                "--scst_patience", "0"]),
    "scst_d03_b64_lr2e-4_cos12": ("self-critical, 64 images, 2e-4, cosine over 12 epochs, after dropout 0.3",
                                  "xe_b128_cos6_d03", ["--scst_batch_size", "64", "--scst_learning_rate", "2e-4",
                                                       "--scst_epochs", "12", "--lr_schedule", "cosine",
                                                       "--scst_patience", "0"]),
    "scst_d03_b16_lr1e-4_cos12": ("self-critical, 16 images, 1e-4, cosine over 12 epochs, after dropout 0.3",
                                  "xe_b128_cos6_d03",
                                  ["--scst_batch_size", "16", "--scst_learning_rate", "1e-4", "--scst_epochs", "12",
                                   "--lr_schedule", "cosine", "--scst_patience", "0"]),
    "scst_d03_b16_3samples": ("the 1e-4 self-critical phase with 3 samples per image", "xe_b128_cos6_d03",
                              ["--scst_samples", "3", "--scst_learning_rate", "1e-4", "--scst_epochs", "12",
                               "--scst_patience", "0"]),
    "scst_d03_b16_greedy_baseline": ("the 1e-4 self-critical phase, greedy baseline", "xe_b128_cos6_d03",
                                     ["--scst_baseline", "greedy", "--scst_learning_rate", "1e-4",
                                      "--scst_epochs", "12", "--scst_patience", "0"]),
    "scst_d03_b16_eval3": ("the 1e-4 self-critical phase, dev scored every 3 epochs", "xe_b128_cos6_d03",
                           ["--eval_every", "3", "--scst_learning_rate", "1e-4", "--scst_epochs", "12",
                            "--scst_patience", "0"]),
    # The whole recipe (train.py's defaults, both phases, self-critical at 1e-4) with other seeds: how far runs spread.
    "recipe_seed2": ("the fast recipe with self-critical at 1e-4, both phases, --seed 2", None,
                     ["--seed", "2", "--objective", "xe+scst", "--scst_learning_rate", "1e-4"]),
    "recipe_seed3": ("the fast recipe with self-critical at 1e-4, both phases, --seed 3", None,
                     ["--seed", "3", "--objective", "xe+scst", "--scst_learning_rate", "1e-4"]),
    # 16 self-critical epochs instead of 12, from the cross-entropy model of a run above (a run's
    # self-critical phase restarts from its model_xe.keras).
    "scst16_d03_b16": scst_from("xe_b128_cos6_d03", "1e-4", epochs=16),
    "scst16_seed2": scst_from("recipe_seed2", "1e-4", epochs=16),
    "scst16_seed3": scst_from("recipe_seed3", "1e-4", epochs=16),
    # Twice the self-critical learning rate (2e-4 at 16 images), from each of the four cross-entropy models
    # above, each with the seed of its own 12-epoch run: a lever judged on four runs, not one.
    "scst_lr2e-4_tf": scst_from("xe_b128_cos6_d03", "2e-4", note=" (the fast recipe)"),
    "scst_lr2e-4_litert": scst_from("recipe_litert", "2e-4"),
    "scst_lr2e-4_seed2": scst_from("recipe_seed2", "2e-4", seed=2),
    "scst_lr2e-4_seed3": scst_from("recipe_seed3", "2e-4", seed=3),
    # The whole recipe (self-critical at 2e-4) with two more seeds, then their cross-entropy models trained on at 1e-4.
    "recipe_seed4": ("the fast recipe, both phases, --seed 4", None, ["--seed", "4", "--objective", "xe+scst"]),
    "recipe_seed5": ("the fast recipe, both phases, --seed 5", None, ["--seed", "5", "--objective", "xe+scst"]),
    "scst_lr1e-4_seed4": scst_from("recipe_seed4", "1e-4", seed=4),
    "scst_lr1e-4_seed5": scst_from("recipe_seed5", "1e-4", seed=5),
}


def run(base: str, data_dir: str, only) -> None:
    runs = os.path.dirname(os.path.abspath(base))
    for name, (_, source, flags) in LEVERS.items():
        if only and name not in only:
            continue
        run_dir = os.path.join(runs, name)
        shutil.rmtree(run_dir, ignore_errors=True)
        if source:
            shutil.copytree(os.path.join(runs, source), run_dir)
            command = ["train.py", "--data_dir", data_dir, "--run_dir", run_dir, "--objective", "scst", *flags]
        else:
            command = ["train.py", "--data_dir", data_dir, "--run_dir", run_dir, "--features_from", base, *flags]
        print(f"# {name}: python {' '.join(command)}", flush=True)
        subprocess.run([sys.executable, *command], cwd=PROJECT, check=True, capture_output=True)


def table(base: str) -> None:
    runs = os.path.dirname(os.path.abspath(base))
    print(f"  {'run':27s}{'epochs':>7s}{'wall':>8s}{'best dev CIDEr-D':>18s}{'at':>11s}   what")
    for name, (what, source, _) in LEVERS.items():
        path = os.path.join(runs, name, "history.csv")
        if not os.path.exists(path):
            continue
        rows = read_history(path)
        if source:  # a self-critical lever: its own epochs only
            rows = [row for row in rows if row["objective"] == "scst"]
        elapsed, best = 0.0, None
        for row in rows:
            elapsed += row["seconds"]
            if "dev_cider" in row and (best is None or row["dev_cider"] > best[0]):
                best = (row["dev_cider"], len([r for r in rows if r["epoch"] <= row["epoch"]]), elapsed)
        if best is None:  # not scored yet (a run under way)
            continue
        print(f"  {name:27s}{len(rows):>7d}{elapsed / 60:>6.1f} m{best[0]:>18.4f}  ep {best[1]:>2d} {best[2] / 60:4.1f} m"
              f"   {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "table"))
    parser.add_argument("--base", required=True, help="the preprocessed run folder")
    parser.add_argument("--data_dir", default=os.path.join(os.path.dirname(PROJECT), "shared", "data", "flickr8k"))
    parser.add_argument("--only", nargs="*", default=[])
    args = parser.parse_args()
    if args.action == "run":
        run(args.base, args.data_dir, args.only)
    else:
        table(args.base)


if __name__ == "__main__":
    main()
