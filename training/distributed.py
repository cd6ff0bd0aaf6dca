"""Training on several devices or machines with tf.distribute (`train.py --strategy`).

    mirrored      every local GPU of this machine (or its logical CPUs when it has no GPU)
    multi_worker  several machines, each running the same train.py command; TF_CONFIG names them

The global `--batch_size` is split evenly across replicas. Each worker reads its own shard of every
shuffled epoch from the feature store, computes gradients on it, and the gradients are summed across
replicas before each step, so all copies of the model stay identical. The chief (task 0) alone scores
the dev split and writes the run folder (checkpoints, state, history); the others receive its scores,
so every worker takes the same decisions (keep, halve the learning rate, stop).

Keras 3's `model.fit` cannot run under MultiWorkerMirroredStrategy (tensorflow/tensorflow#72388), so
this module has its own loop with the same loss, the attention penalty, and the same epoch bookkeeping.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from config import STRATEGIES
from data_loader import caption_batches

# Computed on the chief only and sent to every worker after each epoch.
CHIEF_COLUMNS = ("val_loss", "val_accuracy", "dev_bleu4", "dev_cider")


def make_strategy(name: str) -> Optional[tf.distribute.Strategy]:
    """The tf.distribute strategy named by `--strategy`, or None for plain single-device training."""
    if name == "none":
        return None
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name != "multi_worker":
        raise ValueError(f"unknown --strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        raise ValueError("--strategy multi_worker needs the TF_CONFIG environment variable, naming every worker "
                         "and this one's index (see README, 'Several machines')")
    try:
        tf_config = json.loads(raw)
        workers = tf_config["cluster"]["worker"]
        task = tf_config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not valid ({error}); expected "
                         '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}')
    if task.get("type") == "worker" and not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG task index {index} is not one of the {len(workers)} workers it lists")
    return tf.distribute.MultiWorkerMirroredStrategy()


def _cluster(strategy: Optional[tf.distribute.Strategy]) -> Dict[str, list]:
    """TF_CONFIG's cluster ({"worker": [...], "chief": [...]}); empty for a single machine."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver.cluster_spec().as_dict() if resolver is not None else {}


def is_chief(strategy: Optional[tf.distribute.Strategy]) -> bool:
    """True on the worker that writes the run folder: the only one, a task named chief, or worker 0."""
    cluster = _cluster(strategy)
    if not cluster:
        return True
    task_type, task_id = strategy.cluster_resolver.task_type, strategy.cluster_resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)


def worker_count(strategy: tf.distribute.Strategy) -> int:
    cluster = _cluster(strategy)
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))


def describe(strategy: tf.distribute.Strategy) -> str:
    return (f"{strategy.num_replicas_in_sync} replica(s) on {worker_count(strategy)} worker(s)"
            + ("" if is_chief(strategy) else "; this worker follows the chief, which writes the run folder"))


def same_on_every_worker(strategy: tf.distribute.Strategy, value: float) -> bool:
    """True when every worker passed the same `value` (all of them get the same answer)."""
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([value, value * value, 1.0], tf.float64))
    total, squares, count = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()
    return bool(abs(total * total - count * squares) < 1e-6)


def per_replica_batch_size(strategy: tf.distribute.Strategy, global_batch_size: int) -> int:
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(f"--batch_size {global_batch_size} is the global batch and must split evenly across "
                         f"{replicas} replicas: use a multiple of {replicas}")
    return global_batch_size // replicas


def distributed_batches(strategy: tf.distribute.Strategy, features, feature_rows: np.ndarray,
                        caption_tokens: np.ndarray, global_batch_size: int, seed: int, length_window: int):
    """Training batches for every replica, and the number of steps in one epoch.

    Each input pipeline (one per worker) keeps its shard of the shuffled captions. Partial batches are
    dropped so every replica takes the same number of steps; an epoch skips fewer captions than one
    global batch, and different ones each epoch.
    """
    batch_size = per_replica_batch_size(strategy, global_batch_size)
    pipelines = worker_count(strategy)
    replicas_per_pipeline = strategy.num_replicas_in_sync // pipelines
    steps = (len(feature_rows) // pipelines) // batch_size // replicas_per_pipeline
    if steps == 0:
        raise ValueError(f"{len(feature_rows)} training captions do not fill one global batch of "
                         f"{global_batch_size}: lower --batch_size")

    def dataset_for(context: tf.distribute.InputContext):
        return caption_batches(features, feature_rows, caption_tokens, batch_size, True, seed, length_window,
                               shard=(context.input_pipeline_id, context.num_input_pipelines),
                               drop_remainder=True, flat_targets=True)

    return strategy.distribute_datasets_from_function(dataset_for), steps


def word_statistics(next_words, probabilities):
    """Summed cross-entropy, number of words, and number of correctly predicted words (the training
    model's probabilities at real positions against the flattened real next words)."""
    per_word = keras.losses.sparse_categorical_crossentropy(next_words, probabilities)
    predicted = tf.cast(tf.argmax(probabilities, axis=-1), next_words.dtype)
    correct = tf.cast(tf.equal(predicted, next_words), tf.float32)
    return tf.reduce_sum(per_word), tf.cast(tf.size(next_words), tf.float32), tf.reduce_sum(correct)


class ValidationScores:
    """Cross-entropy and accuracy over real words of the dev batches (`flat_targets`), on this
    worker's copy of the training model (`model.build_training_model`)."""

    def __init__(self, training_model: keras.Model):
        # Traced once for every caption length (reduce_retracing), not once per batch shape and epoch.
        self.one_batch = tf.function(lambda inputs, next_words: word_statistics(
            next_words, training_model(inputs, training=False)), reduce_retracing=True)

    def __call__(self, batches) -> Dict[str, float]:
        totals = np.zeros(3)
        for inputs, next_words in batches:
            totals += [float(value) for value in self.one_batch(inputs, next_words)]
        return {"val_loss": totals[0] / max(totals[1], 1.0), "val_accuracy": totals[2] / max(totals[1], 1.0)}


def broadcast_from_chief(strategy: tf.distribute.Strategy, values: np.ndarray) -> np.ndarray:
    """The chief's `values` on every worker (a sum over replicas in which only replica 0 is non-zero)."""
    def replica_value(context: tf.distribute.ValueContext):
        return tf.constant(values if context.replica_id_in_sync_group == 0 else np.zeros_like(values), tf.float64)

    per_replica = strategy.experimental_distribute_values_from_function(replica_value)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()


def fit_distributed(model: keras.Model, strategy: tf.distribute.Strategy, batches, steps: int,
                    epochs: int, initial_epoch: int, bookkeeping: keras.callbacks.Callback,
                    chief_scores: Callable[[int], Dict[str, float]], schedule=None) -> None:
    """The training loop: `steps` synchronous steps per epoch, then the chief's scores, then bookkeeping.

    `model` is the training model (`model.build_training_model`, built in the strategy's scope);
    `chief_scores(epoch)` runs on the chief only (validation loss, dev metrics when due);
    `bookkeeping` is train.py's EpochBookkeeping, which writes only on the chief; `schedule` (a
    training/schedule.py CosineSchedule) sets the learning rate before each step, on every worker alike.
    """
    replicas = strategy.num_replicas_in_sync

    def replica_step(inputs, next_words):
        with tf.GradientTape() as tape:
            probabilities = model(inputs, training=True)
            cross_entropy, words, correct = word_statistics(next_words, probabilities)
            # The mean over every real word of the global batch: gradients are summed across replicas.
            global_words = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, words)
            # The attention decoder's penalty (add_loss) is a mean over this replica's captions.
            penalty = tf.add_n(model.losses) if model.losses else tf.constant(0.0)
            loss = cross_entropy / tf.maximum(global_words, 1.0) + penalty / replicas
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply(gradients, model.trainable_variables)
        return tf.stack([cross_entropy, words, correct, penalty / replicas])

    @tf.function
    def train_step(iterator):
        totals = strategy.run(replica_step, args=next(iterator))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, totals, axis=None)

    bookkeeping.set_model(model)
    for epoch in range(initial_epoch, epochs):
        bookkeeping.on_epoch_begin(epoch)
        iterator = iter(batches)
        totals = np.zeros(4)
        for _ in range(steps):
            if schedule is not None:
                schedule.before_step()
            totals += train_step(iterator).numpy()
        words = max(totals[1], 1.0)
        logs = {"loss": totals[0] / words + totals[3] / steps, "accuracy": totals[2] / words}
        scores = chief_scores(epoch) if is_chief(strategy) else {}
        sent = np.array([scores.get(key, 0.0) for key in CHIEF_COLUMNS]
                        + [float(key in scores) for key in CHIEF_COLUMNS])
        received = broadcast_from_chief(strategy, sent)
        logs.update({key: received[index] for index, key in enumerate(CHIEF_COLUMNS)
                     if received[len(CHIEF_COLUMNS) + index] > 0.5})
        bookkeeping.on_epoch_end(epoch, logs)
        if model.stop_training:
            break

