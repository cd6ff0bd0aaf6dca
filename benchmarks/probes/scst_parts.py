"""Where a self-critical epoch of the fast recipe spends its time (BENCHMARKS.md, "Time to a model"):
the parts of training/scst.py's loop, timed one after another on the same batches, and one dev scoring.

    python benchmarks/probes/scst_parts.py RUN_DIR [BATCHES]     # default: 60 batches

RUN_DIR is a run trained with cross-entropy (its model_xe.keras, else model.keras, is the starting
model; nothing in the folder is written). Each batch takes train.py's defaults (16 images, 5 samples,
the mean-of-the-others baseline): sampling the captions, their CIDEr-D rewards, the policy-gradient
step. The first 5 batches warm up the compiled functions and are not counted. The epoch estimate is
the mean batch times the batches of one epoch, plus one dev scoring (greedy captions of the dev
images, then BLEU-4 and CIDEr-D), as train.py scores dev after every epoch.
"""
import os
import sys
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, PROJECT)

from config import Config, quiet_tensorflow, run_script  # noqa: E402

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from decoders.decoding import CaptionDecoder, bad_ending_ids  # noqa: E402
from inputs.feature_store import open_features  # noqa: E402
from inputs.run_folder import BEST_MODEL, XE_MODEL, load_run  # noqa: E402
from model import compile_model  # noqa: E402
from training.bookkeeping import DevScorer  # noqa: E402
from training.reward import CiderD  # noqa: E402
from training.scst import PolicyStep, advantages_of, epoch_generator, scst_batches, training_images  # noqa: E402

WARM_UP = 5


def open_run(run_dir: str, config: Config):
    metadata, captions, vocabulary = load_run(run_dir)
    features, image_rows = open_features(run_dir, metadata)
    names = training_images(captions, image_rows)
    start = os.path.join(run_dir, XE_MODEL if os.path.exists(os.path.join(run_dir, XE_MODEL)) else BEST_MODEL)
    model = keras.models.load_model(start, compile=False)
    compile_model(model, config.scst_learning_rate)
    return model, metadata, captions, vocabulary, features, image_rows, names


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    run_dir, batches = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60
    config = Config()
    keras.utils.set_random_seed(config.seed)
    model, metadata, captions, vocabulary, features, image_rows, names = open_run(run_dir, config)
    length = metadata["max_caption_length"]
    banned = bad_ending_ids(vocabulary) if config.block_bad_endings else ()
    sampler = CaptionDecoder(model, length, 0, banned)
    policy_step = PolicyStep(model, sampler)
    reward = CiderD([captions["train"][name] for name in names], vocabulary.tokens, count_end=True)
    rows = np.array([image_rows[name] for name in names])
    rng = epoch_generator(config.seed, 0)
    epoch_batches = scst_batches(len(rows), config, rng)
    seconds = {"sample": [], "reward": [], "policy step": []}
    print(f"# load average {os.getloadavg()[0]:.2f} at the start; {len(names)} training images, "
          f"{len(epoch_batches)} batches of {config.scst_batch_size} per epoch")
    for index, batch in enumerate(epoch_batches[:batches + WARM_UP]):
        image_features = np.asarray(features[rows[batch]], np.float32)
        started = time.perf_counter()
        samples = sampler.sample(image_features, config.scst_samples, rng.integers(0, 2 ** 31 - 1, size=2))
        sampled = time.perf_counter()
        sample_rewards = reward.score_tokens(samples, np.repeat(batch, config.scst_samples))
        advantage = advantages_of(sample_rewards, config.scst_samples, config.scst_baseline)
        rewarded = time.perf_counter()
        policy_step(np.repeat(image_features, config.scst_samples, axis=0), samples, advantage)
        stepped = time.perf_counter()
        if index >= WARM_UP:
            for part, spent in zip(seconds, (sampled - started, rewarded - sampled, stepped - rewarded)):
                seconds[part].append(spent)
    dev_scorer = DevScorer(model, features, image_rows, captions["dev"], vocabulary, length, config)
    dev_scorer()  # compiles the greedy steps of the dev batch size
    started = time.perf_counter()
    dev_scorer()
    dev_seconds = time.perf_counter() - started
    per_epoch = {part: float(np.mean(spent)) * len(epoch_batches) for part, spent in seconds.items()}
    per_epoch["dev scoring"] = dev_seconds
    total = sum(per_epoch.values())
    print(f"  {'part':14s}{'ms per batch':>14s}{'s per epoch':>13s}{'share':>8s}")
    for part, spent in per_epoch.items():
        per_batch = f"{1000 * np.mean(seconds[part]):14.1f}" if part in seconds else f"{'':14s}"
        print(f"  {part:14s}{per_batch}{spent:13.1f}{100 * spent / total:7.1f}%")
    print(f"  {'epoch':14s}{'':14s}{total:13.1f}")
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    run_script(main)
