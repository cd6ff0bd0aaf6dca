"""Stage 2: run folder (features, vocabulary, captions) -> trained decoder `model.keras`.

    python train.py --epochs 20 --batch_size 32
    python train.py --decoder attention         # soft attention over image regions (spatial features)
    python train.py --strategy mirrored         # every local GPU; multi_worker: several machines (TF_CONFIG)
    python train.py --objective scst            # then: self-critical training of the same run (scst.py)
    python train.py --fine_tune_encoder         # or: train the encoder's top layers too (finetune.py)
    python train.py --features_from runs/tuned --seed 7 --run_dir runs/tuned_s7   # another decoder on a
                                                # run's (fine-tuned) features: an ensemble member

Runs preprocess.py first when the run folder has no metadata yet, so this one command goes from
images to a model. Keeps the model with the best dev CIDEr-D (`--monitor`), scoring greedy dev captions
every `--eval_every` epochs; `--resume` continues an interrupted run.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from typing import Dict, List, Optional

from config import TRAIN_FLAGS, Config, parse_config, quiet_tensorflow, read_json, run_script, save_config

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import attention  # noqa: E402,F401  (registers the attention layer, so its models load)
from data_loader import caption_batches, training_examples  # noqa: E402
from decoding import CaptionDecoder, bad_ending_ids, decoder_name  # noqa: E402
from distributed import (ValidationScores, describe, distributed_batches, fit_distributed, is_chief,  # noqa: E402
                         make_strategy, same_on_every_worker)
from encoders import describe_fine_tuning  # noqa: E402
from feature_store import feature_shape, open_features  # noqa: E402
from history import HISTORY_COLUMNS, append_history, read_history  # noqa: E402
from metrics import coco_scores  # noqa: E402
from model import build_model, build_training_model, compile_model  # noqa: E402
from preprocess import METADATA, preprocess, write_json  # noqa: E402
from report import plot_training_curves  # noqa: E402
from vocabulary import Vocabulary  # noqa: E402

BEST_MODEL, LAST_MODEL, STATE, HISTORY = "model.keras", "last_epoch.keras", "training_state.json", "history.csv"
# Self-critical training keeps the cross-entropy model as XE_MODEL and writes its own best into BEST_MODEL.
XE_MODEL, LAST_SCST_MODEL, SCST_STATE = "model_xe.keras", "last_epoch_scst.keras", "training_state_scst.json"
# Encoder fine-tuning (finetune.py) keeps the run's own encoder beside its decoder.
ENCODER_MODEL, LAST_ENCODER = "encoder.keras", "last_epoch_encoder.keras"
LAST_FINE_TUNE_MODEL, FINE_TUNE_STATE = "last_epoch_fine_tune.keras", "training_state_fine_tune.json"
# Each training phase's resumable checkpoint and state file.
PHASE_FILES = {"xe": (LAST_MODEL, STATE), "scst": (LAST_SCST_MODEL, SCST_STATE),
               "fine_tune": (LAST_FINE_TUNE_MODEL, FINE_TUNE_STATE)}
CURVES, TENSORBOARD = "training_curves.png", "tensorboard"
SHOWN_COLUMNS = HISTORY_COLUMNS[2:-1]
# --monitor value -> (history column, True when higher is better)
MONITORS = {"cider": ("dev_cider", True), "bleu4": ("dev_bleu4", True), "val_loss": ("val_loss", False),
            "loss": ("loss", False)}


class DevScorer:
    """Greedy captions of the dev images from the model being trained, scored with BLEU-4 and CIDEr-D."""

    def __init__(self, model, features, image_rows: Dict[str, int], references: Dict[str, List[str]],
                 vocabulary: Vocabulary, max_length: int, config: Config, batch_size: int = 256):
        names = [name for name in references if name in image_rows]
        # Kept in the store's precision (float16 for spatial maps); the decoder widens one batch at a time.
        self.image_features = np.asarray(features[[image_rows[name] for name in names]])
        self.references = [references[name] for name in names]
        # The decoder reads the model's layers, so it always sees the current weights.
        self.decoder = CaptionDecoder(model, max_length, config.no_repeat_ngram_size,
                                      bad_ending_ids(vocabulary) if config.block_bad_endings else ())
        self.vocabulary, self.batch_size = vocabulary, batch_size

    def __call__(self) -> Dict[str, float]:
        captions = self.decoder.captions(self.image_features, self.vocabulary, 1, 0.0, self.batch_size)
        scores = coco_scores(self.references, captions, metrics=("BLEU-4", "CIDEr-D")).corpus
        return {"dev_bleu4": scores["BLEU-4"], "dev_cider": scores["CIDEr-D"]}


def is_better(value: float, best: Optional[float], higher_is_better: bool) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if higher_is_better else value < best


def patience_exhausted(epochs_done: int, best_epoch: int, patience: int) -> bool:
    return bool(patience) and epochs_done - best_epoch >= patience


class EpochBookkeeping(keras.callbacks.Callback):
    """After each epoch: scores the dev split when due, keeps the best model by the monitored value,
    saves the resumable checkpoint, appends to history.csv, redraws the curves, prints one line.

    With `writes` False (a distributed worker other than the chief) it takes the same decisions from
    the same numbers but leaves the run folder to the chief.
    """

    def __init__(self, run_dir: str, config: Config, monitor: str, state: dict,
                 dev_scorer: Optional[DevScorer], captioner: keras.Model, writes: bool = True,
                 objective: str = "xe", epoch_offset: int = 0, kept_before: int = 0,
                 encoder: Optional[keras.Model] = None):
        """`objective` "scst" or "fine_tune": a later phase, with its own checkpoint and state files; its
        epochs are counted after the `epoch_offset` epochs before it in history.csv, and until it
        improves, model.keras is still the one of epoch `kept_before` (the curves mark it).
        `encoder`: a trainable encoder (fine-tuning), saved and checkpointed with the decoder.
        The state file keeps `epoch_offset` and `kept_before`: a phase after this one counts from them."""
        super().__init__()
        self.objective, self.epoch_offset, self.kept_before = objective, epoch_offset, kept_before
        self.last_model, self.state_file = PHASE_FILES[objective]
        self.encoder = encoder
        self.run_dir, self.config, self.monitor, self.dev_scorer = run_dir, config, monitor, dev_scorer
        # What is saved: the captioner, while Keras fits (and hands this callback) its training view.
        self.captioner, self.writes = captioner, writes
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch", 0)
        self.last_decay = state.get("last_decay_epoch", 0)
        self.started = time.monotonic()
        # The per-epoch numbers of history.csv (both phases) as TensorBoard scalars, beside Keras's own logs.
        self.summaries = (tf.summary.create_file_writer(os.path.join(run_dir, TENSORBOARD, "epochs"))
                          if config.tensorboard and writes else None)

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        row = {key: float(value) for key, value in (logs or {}).items() if key in HISTORY_COLUMNS}
        if self.dev_scorer is not None and dev_scoring_due(done, self.config):
            row.update(self.dev_scorer())
        row.update(epoch=self.epoch_offset + done, objective=self.objective,
                   seconds=round(time.monotonic() - self.started, 1))
        column, higher_is_better = MONITORS[self.monitor]
        improved = column in row and is_better(row[column], self.best, higher_is_better)
        if improved:
            self.best, self.best_epoch = row[column], done
            if self.writes:
                if self.encoder is not None:
                    self.encoder.save(os.path.join(self.run_dir, ENCODER_MODEL))
                self.captioner.save(os.path.join(self.run_dir, BEST_MODEL))
        decay, decayed = self.config.decay_patience, False
        if decay and done - max(self.best_epoch, self.last_decay) >= decay:
            # A plateau: smaller steps often find a better model than stopping would.
            learning_rate = self.model.optimizer.learning_rate
            learning_rate.assign(learning_rate_of(self.model) * 0.5)
            if self.encoder is not None:
                self.encoder.optimizer.learning_rate.assign(learning_rate_of(self.encoder) * 0.5)
            self.last_decay, decayed = done, True
        # The checkpoint first, then the state that points at it: a crash between the two
        # only repeats one epoch. The optimizer (learning rate included) is saved with the checkpoint.
        if self.writes:
            if self.encoder is not None:
                self.encoder.save(os.path.join(self.run_dir, LAST_ENCODER))
            self.captioner.save(os.path.join(self.run_dir, self.last_model))
            write_json(os.path.join(self.run_dir, self.state_file),
                       {"epochs_done": done, "monitor": self.monitor, "best": self.best, "best_epoch": self.best_epoch,
                        "last_decay_epoch": self.last_decay,
                        "learning_rate": learning_rate_of(self.model), "epoch_offset": self.epoch_offset,
                        "kept_before": self.kept_before})
            append_history(os.path.join(self.run_dir, HISTORY), row)
            if self.summaries is not None:
                with self.summaries.as_default():
                    for key, value in {**row, "learning_rate": learning_rate_of(self.model)}.items():
                        if key not in ("epoch", "objective"):
                            tf.summary.scalar(key, value, step=int(row["epoch"]))
                self.summaries.flush()
            kept = self.epoch_offset + self.best_epoch if self.best_epoch else self.kept_before
            plot_training_curves(read_history(os.path.join(self.run_dir, HISTORY)),
                                 os.path.join(self.run_dir, CURVES), kept or None)
        shown = "  ".join(f"{key} {row[key]:.4f}" for key in SHOWN_COLUMNS if key in row)
        phase = "" if self.objective == "xe" else f"{self.objective} "
        print(f"{phase}epoch {done}/{self.config.epochs}  {shown}  ({row['seconds']:.0f} s)"
              + (f"  (best so far{': saved' if self.writes else ''})" if improved else ""), flush=True)
        if decayed:
            print(f"no better {column} for {decay} epochs: learning rate halved to "
                  f"{learning_rate_of(self.model):.2e}")
        if patience_exhausted(done, self.best_epoch, self.config.patience):
            print(f"stopping early: no better {column} for {self.config.patience} epochs "
                  f"(best at epoch {self.best_epoch})")
            self.model.stop_training = True


def learning_rate_of(model: keras.Model) -> float:
    # .numpy() also reads a tf.distribute copy of the variable, which float() cannot.
    return float(model.optimizer.learning_rate.numpy())


def dev_scoring_due(epochs_done: int, config: Config) -> bool:
    return epochs_done % config.eval_every == 0 or epochs_done == config.epochs


def load_run(run_dir: str):
    metadata = read_json(os.path.join(run_dir, METADATA))
    captions = read_json(os.path.join(run_dir, "captions.json"))
    vocabulary = Vocabulary.load(os.path.join(run_dir, "vocabulary.json"))
    return metadata, captions, vocabulary


def check_later_phase_features(config: Config) -> None:
    """--features_from on a phase that continues a trained run: allowed only where it names the run the
    folder's features were copied from (the same command with one flag more), since a later phase cannot
    swap the features its model was trained on."""
    if not config.features_from or (config.objective == "xe" and not config.fine_tune_encoder):
        return
    phase = "encoder fine-tuning" if config.fine_tune_encoder else "self-critical training"
    run_dir = config.resolved_run_dir()
    metadata_path = os.path.join(run_dir, METADATA)
    copied_from = read_json(metadata_path).get("features_from") if os.path.exists(metadata_path) else None
    if copied_from != os.path.abspath(config.features_from):
        where = f"its features come from {copied_from}" if copied_from else "it has no features copied from that run"
        raise ValueError(f"--features_from {config.features_from}: {phase} continues the run in {run_dir}, and "
                         f"{where}; leave out --features_from (it starts a new run, with cross-entropy training)")


def train(config: Config) -> dict:
    check_later_phase_features(config)
    if config.fine_tune_encoder:
        if config.objective != "xe":
            raise ValueError("--fine_tune_encoder and --objective scst are separate phases: run one command for each")
        from finetune import train_fine_tune

        return train_fine_tune(config)
    if config.objective == "scst":
        from scst import train_scst

        return train_scst(config)
    if config.shard:
        raise ValueError("--shard is for preprocess.py: extract each part with it, merge without it, then train")
    if config.eval_every < 1:
        raise ValueError(f"--eval_every must be at least 1, got {config.eval_every}")
    # Before any other TensorFlow work: a multi-worker strategy must be set up at program start.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    run_dir = config.resolved_run_dir()
    if config.features_from:
        preprocess(config)  # refused when this run folder has features of its own
    elif not os.path.exists(os.path.join(run_dir, METADATA)):
        if config.strategy == "multi_worker":
            raise ValueError(f"{run_dir} has no features: run preprocess.py first (--shard I/N on each machine, "
                             f"then once without --shard to merge) and give every worker the run folder")
        if config.decoder == "attention" and config.features != "spatial":
            config = dataclasses.replace(config, features="spatial")
        print(f"{run_dir} has no features yet: running preprocess first ({config.features} features)")
        preprocess(config)
    metadata, captions, vocabulary = load_run(run_dir)
    features, image_rows = open_features(run_dir, metadata)
    length = metadata["max_caption_length"]
    train_rows, train_tokens = training_examples(captions["train"], image_rows, vocabulary.encode, length)
    dev_rows, dev_tokens = training_examples(captions["dev"], image_rows, vocabulary.encode, length)
    if len(train_rows) == 0:
        raise ValueError(f"{run_dir}: no training captions with image features; run preprocess.py again")
    print(f"training on {len(train_rows)} captions of {len(set(train_rows.tolist()))} images, "
          f"validating on {len(dev_rows)} dev captions; {config.decoder} decoder, encoder {metadata['encoder']} "
          f"({metadata.get('features', 'global')} features), "
          + (describe_fine_tuning(metadata["fine_tuned_encoder"]) if metadata.get("fine_tuned_encoder")
             else f"weights {metadata['weights']}"))
    if strategy is not None:
        print(f"--strategy {config.strategy}, global batch {config.batch_size}: {describe(strategy)}")

    keras.utils.set_random_seed(config.seed)
    # What is fitted is build_training_model's view of the model, which reads flattened targets.
    dev_batches = caption_batches(features, dev_rows, dev_tokens, config.batch_size, False, config.seed,
                                  flat_targets=True) if len(dev_rows) else None
    monitor = config.monitor
    if dev_batches is None:
        monitor = "loss"
        print("warning: no dev images with features; keeping the model with the lowest training loss",
              file=sys.stderr)

    state_path, last_path = os.path.join(run_dir, STATE), os.path.join(run_dir, LAST_MODEL)
    state = {"epochs_done": 0, "monitor": monitor, "best": None, "best_epoch": 0}
    resuming = config.resume and os.path.exists(state_path) and os.path.exists(last_path)
    if resuming:
        state = read_json(state_path)
    # Checked before any worker builds a model: they must build the same variables in the same order.
    if strategy is not None and not same_on_every_worker(strategy, state["epochs_done"]):
        raise ValueError(f"the workers' run folders disagree on how many epochs are done (this one: "
                         f"{state['epochs_done']}): give every worker a copy of the chief's run folder")
    if resuming:
        if state["monitor"] != monitor:
            raise ValueError(f"{run_dir} was trained with --monitor {state['monitor']}; resume with the same "
                             f"--monitor, or train from scratch in a new --run_dir")
        with strategy.scope() if strategy else nullcontext():
            model = keras.models.load_model(last_path)
        trained_decoder = decoder_name(model)
        if trained_decoder != config.decoder:
            raise ValueError(f"{run_dir} holds a {trained_decoder} decoder; resume with --decoder {trained_decoder}, "
                             f"or train from scratch in a new --run_dir")
        print(f"resuming after epoch {state['epochs_done']} (best {MONITORS[monitor][0]} "
              f"{state['best']} at epoch {state['best_epoch']})")
    else:
        if config.resume:
            print("nothing to resume in this run folder: starting from scratch", file=sys.stderr)
        with strategy.scope() if strategy else nullcontext():
            model = build_model(config, len(vocabulary), feature_shape(metadata))
            compile_model(model, config.learning_rate)
        if chief and os.path.exists(os.path.join(run_dir, HISTORY)):
            os.remove(os.path.join(run_dir, HISTORY))
    if patience_exhausted(state["epochs_done"], state["best_epoch"], config.patience):
        print(f"stopped early before (best at epoch {state['best_epoch']}, patience {config.patience}): nothing to do")
        return state
    if state["epochs_done"] >= config.epochs:
        print(f"already trained for {state['epochs_done']} epochs (asked for {config.epochs}): nothing to do")
        return state
    # Saved only now: a command refused above must not overwrite the record of the run that made this folder.
    if chief:
        save_config(config, run_dir, "train")
    dev_scorer = None if dev_batches is None or not chief else DevScorer(model, features, image_rows,
                                                                         captions["dev"], vocabulary, length, config)
    with strategy.scope() if strategy else nullcontext():
        training_model = build_training_model(model)
    bookkeeping = EpochBookkeeping(run_dir, config, monitor, state, dev_scorer if strategy is None else None,
                                   model, writes=chief)

    if strategy is None:
        # Keras warns that it cannot shuffle a tf.data pipeline; ours shuffles itself.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*was passed")
        train_batches = caption_batches(features, train_rows, train_tokens, config.batch_size, True, config.seed,
                                        config.length_window, flat_targets=True)
        training_model.fit(train_batches, validation_data=dev_batches, epochs=config.epochs,
                           initial_epoch=state["epochs_done"], verbose=1 if sys.stdout.isatty() else 0,
                           callbacks=[bookkeeping] + ([keras.callbacks.TensorBoard(os.path.join(run_dir, TENSORBOARD))]
                                                      if config.tensorboard else []))
    else:
        validation_scores = ValidationScores(training_model)

        def chief_scores(epoch: int) -> Dict[str, float]:
            scores = {} if dev_batches is None else validation_scores(dev_batches)
            if dev_scorer is not None and dev_scoring_due(epoch + 1, config):
                scores.update(dev_scorer())
            return scores

        batches, steps = distributed_batches(strategy, features, train_rows, train_tokens, config.batch_size,
                                             config.seed, config.length_window)
        fit_distributed(training_model, strategy, batches, steps, config.epochs, state["epochs_done"], bookkeeping,
                        chief_scores)
        if not chief:
            print("this worker is done; the chief wrote the model into its run folder")
            return state
    state = read_json(state_path)
    if state["best"] is None:
        raise ValueError(f"no epoch gave a usable {MONITORS[state['monitor']][0]} (the loss diverged?); "
                         f"try a lower --learning_rate")
    print(f"best {MONITORS[state['monitor']][0]} {state['best']:.4f} at epoch {state['best_epoch']}; "
          f"model saved as {os.path.join(run_dir, BEST_MODEL)}; curves in {os.path.join(run_dir, CURVES)}")
    return state


def main(argv: list[str] | None = None) -> int:
    train(parse_config(TRAIN_FLAGS, __doc__.splitlines()[0], argv))
    return 0


if __name__ == "__main__":
    run_script(main)
