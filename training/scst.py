"""Self-critical sequence training (Rennie et al. 2017) of a run trained with cross-entropy.

    python train.py --run_dir runs/flickr8k                      # cross-entropy first
    python train.py --run_dir runs/flickr8k --objective scst     # then this phase

For each batch of training images the model samples `--scst_samples` captions per image from its own
word distribution (decoders/decoding.py, the same compiled steps as greedy and beam search), each sample is
rewarded with its CIDEr-D against the image's training references (reward.py), and the model takes a
REINFORCE step: raise the log-probability of samples that beat the baseline, lower the others. The
baseline is the mean reward of the image's other samples (Luo 2020) or the reward of its greedy
caption (Rennie et al.). No dropout in this phase: the gradient is that of the distribution sampled.

The cross-entropy model stays in the run folder as `model_xe.keras`; `model.keras` becomes the best
self-critical model by greedy dev CIDEr-D, and is replaced only when this phase beats the
cross-entropy model. The phase resumes like cross-entropy training (`--resume`).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from config import Config
from decoders.decoding import CaptionDecoder, bad_ending_ids
from inputs.feature_store import open_features
from inputs.json_files import read_json
from inputs.run_folder import BEST_MODEL, CURVES, HISTORY, LAST_SCST_MODEL, SCST_STATE, XE_MODEL, load_run, \
    read_state, save_config
from inputs.vocabulary import START_ID
from model import build_training_model, compile_model
from training.bookkeeping import DevScorer, EpochBookkeeping, finished_before, resumable_state, score_starting_model
from training.history import read_history, write_history
from training.reward import CiderD
from training.schedule import CosineSchedule


def check_scst_config(config: Config) -> None:
    if config.scst_samples < 1 or (config.scst_baseline == "mean" and config.scst_samples < 2):
        raise ValueError(f"--scst_samples {config.scst_samples}: the 'mean' baseline compares each sample with the "
                         f"image's other samples, so it needs at least 2 (or use --scst_baseline greedy)")
    if config.scst_batch_size < 1 or config.scst_epochs < 1:
        raise ValueError("--scst_batch_size and --scst_epochs must be at least 1")
    if config.strategy != "none":
        raise ValueError("--objective scst runs on one machine: leave out --strategy")


class PolicyStep:
    """One REINFORCE update: -sum(advantage * log p(sampled word)) over the real words of the samples,
    divided by their number, through the training view (the softmax only at real positions).

    p is the distribution the sampler drew each word from: the model's, renormalised over the words the
    sampler could draw there (`CaptionDecoder.policy_words`: no <unk>, <pad>, <start>, no <end> first,
    and with --block_bad_endings no <end> after "a", "the", ...). A gradient of another distribution
    would push probability towards words never sampled: with the raw softmax, every lowered sample
    would hand its probability to <unk>, which then swallows most of the mass.
    """

    def __init__(self, model: keras.Model, sampler: CaptionDecoder):
        if sampler.no_repeat:
            raise ValueError("self-critical training samples without --no_repeat_ngram_size (it applies to dev "
                             "scoring only)")
        self.model, self.sampler = model, sampler
        self.view = build_training_model(model)
        self.optimizer = model.optimizer
        self.step = tf.function(self._step, reduce_retracing=True)
        self.log_probabilities = tf.function(self._log_probabilities, reduce_retracing=True)

    def _log_probabilities(self, image_features, samples):
        """The log-probability of each real word of `samples` (row by row) under the sampler's distribution."""
        caption_tokens = tf.concat([tf.fill([tf.shape(samples)[0], 1], START_ID), samples[:, :-1]], axis=1)
        real = tf.not_equal(samples, 0)
        words, previous = tf.boolean_mask(samples, real), tf.boolean_mask(caption_tokens, real)
        allowed = tf.cast(self.sampler.policy_words(previous, tf.equal(previous, START_ID)), tf.float32)
        probabilities = self.view({"image_features": image_features, "caption_tokens": caption_tokens,
                                   "next_words": samples}, training=False)
        return (tf.math.log(tf.gather(probabilities, words, batch_dims=1) + 1e-12)
                - tf.math.log(tf.reduce_sum(probabilities * allowed, axis=-1) + 1e-12))

    def _step(self, image_features, samples, advantages):
        real = tf.not_equal(samples, 0)
        word_rows = tf.boolean_mask(tf.broadcast_to(tf.range(tf.shape(samples)[0])[:, None], tf.shape(samples)), real)
        with tf.GradientTape() as tape:
            log_probabilities = self._log_probabilities(image_features, samples)
            weights = tf.gather(advantages, word_rows)
            loss = -tf.reduce_sum(weights * log_probabilities) / tf.cast(tf.size(log_probabilities), tf.float32)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def __call__(self, image_features: np.ndarray, samples: np.ndarray, advantages: np.ndarray) -> float:
        longest = max(1, int((samples != 0).sum(axis=1).max()))  # drop the columns that are padding everywhere
        return float(self.step(tf.constant(image_features, tf.float32), tf.constant(samples[:, :longest], tf.int32),
                               tf.constant(advantages, tf.float32)))


def advantages_of(rewards: np.ndarray, samples_per_image: int, baseline: str, greedy_rewards=None) -> np.ndarray:
    """Each sample's reward minus its baseline (rows image by image, `samples_per_image` each)."""
    grouped = rewards.reshape(-1, samples_per_image)
    if baseline == "greedy":
        return (grouped - np.asarray(greedy_rewards)[:, None]).reshape(-1)
    others = (grouped.sum(axis=1, keepdims=True) - grouped) / (samples_per_image - 1)
    return (grouped - others).reshape(-1)


def training_images(captions: dict, image_rows: dict) -> list:
    """The training images the phase samples captions for: those with features and at least one caption."""
    return [name for name in captions["train"] if name in image_rows and captions["train"][name]]


def batches_per_epoch(images: int, config: Config) -> int:
    """How many batches one epoch over `images` training images has (scst_batches splits them so)."""
    return max(1, images // config.scst_batch_size)


def epoch_generator(seed: int, epoch: int) -> np.random.Generator:
    """All the randomness of self-critical epoch `epoch` (counting from 0): its batch order, then each
    batch's sampling seed. Derived from (--seed, epoch) alone, so a run resumed after epoch k draws in
    epoch k + 1 what an uninterrupted run draws there."""
    return np.random.default_rng([seed, epoch])


def scst_batches(images: int, config: Config, rng: np.random.Generator) -> list:
    """One epoch's batches of image indices, in a random order."""
    return np.array_split(rng.permutation(images), batches_per_epoch(images, config))


def scst_epoch(sampler: CaptionDecoder, policy_step: PolicyStep, reward: CiderD, features, rows: np.ndarray,
               epoch: int, config: Config, progress: bool = False,
               schedule: Optional[CosineSchedule] = None) -> tuple[float, float]:
    """Epoch `epoch` over the images (`rows[i]`: image i's feature row; image i is reward's image i), in
    random batches of `config.scst_batch_size`: (mean policy loss, mean sample reward). `schedule` sets
    the learning rate before each step."""
    losses, rewards = [], []
    samples_per_image = config.scst_samples
    rng = epoch_generator(config.seed, epoch)
    batches = scst_batches(len(rows), config, rng)
    with tqdm(batches, unit="batch", desc="self-critical", disable=not progress, leave=False) as shown:
        for batch in shown:
            if schedule is not None:
                schedule.before_step()
            image_features = np.asarray(features[rows[batch]], np.float32)
            samples = sampler.sample(image_features, samples_per_image, rng.integers(0, 2 ** 31 - 1, size=2))
            sample_rewards = reward.score_tokens(samples, np.repeat(batch, samples_per_image))
            greedy_rewards = None
            if config.scst_baseline == "greedy":
                greedy_rewards = reward.score_tokens(np.stack(sampler.greedy(image_features)), batch)
            advantage = advantages_of(sample_rewards, samples_per_image, config.scst_baseline, greedy_rewards)
            losses.append(policy_step(np.repeat(image_features, samples_per_image, axis=0), samples, advantage))
            rewards.append(sample_rewards.mean())
            shown.set_postfix(reward=f"{np.mean(rewards):.4f}", refresh=False)
    return float(np.mean(losses)), float(np.mean(rewards))


def epochs_before(run_dir: str, earlier_rows: list) -> tuple[int, int]:
    """(epochs before this phase, as history.csv numbers them; the epoch of the model it starts from)."""
    tuned = read_state(run_dir, "fine_tune")
    if earlier_rows and tuned is not None:  # this phase follows encoder fine-tuning: counted after it
        kept = tuned["epoch_offset"] + tuned["best_epoch"] if tuned.get("best_epoch") else tuned["kept_before"]
        return int(max(row["epoch"] for row in earlier_rows)), kept
    xe_state = read_state(run_dir, "xe") or {}
    return xe_state.get("epochs_done", 0), xe_state.get("best_epoch", 0)


def open_policy(config: Config, run_dir: str) -> tuple[keras.Model, dict, bool, list]:
    """The model to train and the phase's state: the last checkpoint with --resume, else the cross-entropy
    model (kept as model_xe.keras); and the history rows of the phases before this one."""
    xe_path = os.path.join(run_dir, XE_MODEL)
    if not os.path.exists(xe_path):
        shutil.copyfile(os.path.join(run_dir, BEST_MODEL), xe_path)  # kept for comparison and restarts
    history_path = os.path.join(run_dir, HISTORY)
    earlier = ([row for row in read_history(history_path) if row["objective"] != "scst"]
               if os.path.exists(history_path) else [])
    state = resumable_state(run_dir, "scst", config.resume)
    if state is not None:
        print(f"resuming self-critical training after epoch {state['epochs_done']} "
              f"(best dev_cider {state['best']:.4f} at epoch {state['best_epoch']})")
        return keras.models.load_model(os.path.join(run_dir, LAST_SCST_MODEL)), state, True, earlier
    model = keras.models.load_model(xe_path, compile=False)
    compile_model(model, config.scst_learning_rate)
    shutil.copyfile(xe_path, os.path.join(run_dir, BEST_MODEL))  # the best so far, until this phase beats it
    if os.path.exists(history_path):  # a restarted phase: forget the rows of the one before
        write_history(history_path, earlier)
    return model, {"epochs_done": 0}, False, earlier


def train_scst(config: Config) -> dict:
    """Self-critical training of the run's cross-entropy model; the phase's final state."""
    check_scst_config(config)
    run_dir = config.resolved_run_dir()
    if not os.path.exists(os.path.join(run_dir, BEST_MODEL)):
        raise ValueError(f"{run_dir}: no trained model ({BEST_MODEL}); self-critical training continues a run "
                         f"trained with cross-entropy: run python train.py --run_dir {run_dir} first")
    metadata, captions, vocabulary = load_run(run_dir)
    features, image_rows = open_features(run_dir, metadata)
    names = training_images(captions, image_rows)
    if not names:
        raise ValueError(f"{run_dir}: no training image has features and captions; run preprocess.py again")
    length = metadata["max_caption_length"]
    keras.utils.set_random_seed(config.seed)
    model, state, resuming, earlier = open_policy(config, run_dir)
    if finished_before(state, config.scst_epochs, config.scst_patience, "scst"):
        return state
    save_config(config, run_dir, "train_scst")

    banned = bad_ending_ids(vocabulary) if config.block_bad_endings else ()
    sampler = CaptionDecoder(model, length, 0, banned)
    dev_scorer = DevScorer(model, features, image_rows, captions["dev"], vocabulary, length, config)
    if not resuming:
        score_starting_model(state, dev_scorer, XE_MODEL)
    policy_step = PolicyStep(model, sampler)
    reward = CiderD([captions["train"][name] for name in names], vocabulary.tokens, count_end=True)
    rows = np.array([image_rows[name] for name in names])
    epoch_offset, kept_before = epochs_before(run_dir, earlier)
    phase = dataclasses.replace(config, epochs=config.scst_epochs, patience=config.scst_patience)
    bookkeeping = EpochBookkeeping(run_dir, phase, "cider", state, dev_scorer, model, objective="scst",
                                   epoch_offset=epoch_offset, kept_before=kept_before)
    bookkeeping.set_model(model)
    schedule = None if config.lr_schedule == "plateau" else CosineSchedule(
        model.optimizer, config.scst_learning_rate, batches_per_epoch(len(rows), config) * config.scst_epochs)
    print(f"self-critical training on {len(names)} images, {config.scst_samples} samples each, baseline "
          f"{config.scst_baseline}, learning rate {float(model.optimizer.learning_rate.numpy()):.2e}"
          + (" (cosine schedule)" if schedule else ""))
    for epoch in range(state["epochs_done"], config.scst_epochs):
        bookkeeping.on_epoch_begin(epoch)
        loss, mean_reward = scst_epoch(sampler, policy_step, reward, features, rows, epoch, config,
                                       progress=sys.stdout.isatty(), schedule=schedule)
        bookkeeping.on_epoch_end(epoch, {"scst_loss": loss, "reward": mean_reward})
        if model.stop_training:
            break
    state = read_json(os.path.join(run_dir, SCST_STATE))
    kept = (f"model saved as {os.path.join(run_dir, BEST_MODEL)}" if state["best_epoch"] else
            f"no epoch beat the cross-entropy model, which stays as {BEST_MODEL}")
    print(f"best greedy dev CIDEr-D {state['best']:.4f} at self-critical epoch {state['best_epoch']}; {kept}; "
          f"the cross-entropy model is {os.path.join(run_dir, XE_MODEL)}; curves in {os.path.join(run_dir, CURVES)}")
    return state
