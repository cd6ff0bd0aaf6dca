"""What every training phase shares: dev scoring, the epoch's bookkeeping, patience and learning-rate
halving, and the checks each phase makes before it starts (resume, already finished, the score to beat).

Cross-entropy training (train.py), encoder fine-tuning (finetune.py) and self-critical training
(scst.py) each run their own epochs and hand every finished epoch to `EpochBookkeeping`, which keeps
the best model, writes the resumable checkpoint and state, and appends to history.csv.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from config import Config
from decoders.decoding import CaptionDecoder, bad_ending_ids
from inputs.json_files import read_json, write_json
from inputs.run_folder import BEST_MODEL, CURVES, ENCODER_MODEL, HISTORY, LAST_ENCODER, PHASE_FILES, TENSORBOARD
from inputs.vocabulary import Vocabulary
from scoring.metrics import coco_scores
from scoring.report import plot_training_curves
from training.history import HISTORY_COLUMNS, append_history, read_history

SHOWN_COLUMNS = HISTORY_COLUMNS[2:-1]
# --monitor value -> (history column, True when higher is better)
MONITORS = {"cider": ("dev_cider", True), "bleu4": ("dev_bleu4", True), "val_loss": ("val_loss", False),
            "loss": ("loss", False)}
PHASE_NAMES = {"xe": "cross-entropy training", "fine_tune": "encoder fine-tuning", "scst": "self-critical training"}


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


def patience_exhausted(unimproved: int, patience: int) -> bool:
    """`unimproved`: scored epochs since the best one. Patience counts scored epochs only: an epoch whose
    monitored value was not computed (dev not scored, --eval_every) cannot have failed to improve it."""
    return bool(patience) and unimproved >= patience


def unimproved_scores(state: dict) -> tuple[int, int]:
    """(scored epochs since the best, and since the later of the best and the last halving) of a saved
    state; a state written before these were kept counts every epoch, as it was trained."""
    done, best_epoch = state.get("epochs_done", 0), state.get("best_epoch", 0)
    since_best = state.get("scored_since_best", done - best_epoch)
    return since_best, state.get("scored_since_decay", done - max(best_epoch, state.get("last_decay_epoch", 0)))


def learning_rate_of(model: keras.Model) -> float:
    # .numpy() also reads a tf.distribute copy of the variable, which float() cannot.
    return float(model.optimizer.learning_rate.numpy())


def check_bookkeeping_flags(config: Config) -> None:
    """The flags every phase's bookkeeping reads, checked before any phase starts or writes."""
    if config.eval_every < 1:
        raise ValueError(f"--eval_every must be at least 1, got {config.eval_every}")
    for flag in ("patience", "scst_patience", "decay_patience"):
        if getattr(config, flag) < 0:
            raise ValueError(f"--{flag} must be 0 (off) or more, got {getattr(config, flag)}")


def dev_scoring_due(epochs_done: int, config: Config) -> bool:
    return epochs_done % config.eval_every == 0 or epochs_done == config.epochs


def resumable_state(run_dir: str, phase: str, resume: bool, also_needs=()) -> Optional[dict]:
    """The phase's saved state when `--resume` finds its checkpoint (and the files `also_needs`) in the
    run folder; else None, with a note when `--resume` was asked for."""
    checkpoint, state_file = PHASE_FILES[phase]
    if resume and all(os.path.exists(os.path.join(run_dir, name)) for name in (state_file, checkpoint, *also_needs)):
        return read_json(os.path.join(run_dir, state_file))
    if resume:
        print(f"no {PHASE_NAMES[phase]} to resume in this run folder: starting it", file=sys.stderr)
    return None


def finished_before(state: dict, epochs: int, patience: int, phase: str) -> bool:
    """True (and says so) when the phase's saved state already stopped early or ran `epochs` epochs."""
    done, best_epoch = state.get("epochs_done", 0), state.get("best_epoch", 0)
    if patience_exhausted(unimproved_scores(state)[0], patience):
        print(f"{PHASE_NAMES[phase]} stopped early before (best at epoch {best_epoch}, patience {patience})")
        return True
    if done >= epochs:
        print(f"already trained for {done} epochs of {PHASE_NAMES[phase]} (asked for {epochs}, best at epoch "
              f"{best_epoch})")
        return True
    return False


def score_starting_model(state: dict, dev_scorer: Callable[[], Dict[str, float]], starting_from: str) -> None:
    """A later phase's first bar: the greedy dev CIDEr-D of the model it starts from, which model.keras
    keeps until an epoch of this phase beats it."""
    start = dev_scorer()
    state.update(best=start["dev_cider"], best_epoch=0, monitor="cider")
    print(f"starting from {starting_from}: greedy dev CIDEr-D {start['dev_cider']:.4f}, "
          f"BLEU-4 {start['dev_bleu4']:.4f}")


class EpochBookkeeping(keras.callbacks.Callback):
    """After each epoch: scores the dev split when due, keeps the best model by the monitored value,
    saves the resumable checkpoint, appends to history.csv, redraws the curves, prints one line.

    With `writes` False (a distributed worker other than the chief) it takes the same decisions from
    the same numbers but leaves the run folder to the chief.
    """

    def __init__(self, run_dir: str, config: Config, monitor: str, state: dict,
                 dev_scorer: Optional[Callable[[], Dict[str, float]]], captioner: keras.Model, writes: bool = True,
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
        self.scored_since_best, self.scored_since_decay = unimproved_scores(state)
        self.started = time.monotonic()
        # The per-epoch numbers of history.csv (every phase) as TensorBoard scalars, beside Keras's own logs.
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
        scored = column in row
        improved = scored and is_better(row[column], self.best, higher_is_better)
        self.scored_since_best = 0 if improved else self.scored_since_best + int(scored)
        self.scored_since_decay = 0 if improved else self.scored_since_decay + int(scored)
        if improved:
            self.best, self.best_epoch = row[column], done
            if self.writes:
                if self.encoder is not None:
                    self.encoder.save(os.path.join(self.run_dir, ENCODER_MODEL))
                self.captioner.save(os.path.join(self.run_dir, BEST_MODEL))
        decayed = self._halve_learning_rate_on_plateau(done)
        if self.writes:
            self._write_epoch(done, row)
        shown = "  ".join(f"{key} {row[key]:.4f}" for key in SHOWN_COLUMNS if key in row)
        phase = "" if self.objective == "xe" else f"{self.objective} "
        print(f"{phase}epoch {done}/{self.config.epochs}  {shown}  ({row['seconds']:.0f} s)"
              + (f"  (best so far{': saved' if self.writes else ''})" if improved else ""), flush=True)
        if decayed:
            print(f"no better {column} in {self.config.decay_patience} scored epochs: learning rate halved to "
                  f"{learning_rate_of(self.model):.2e}")
        if patience_exhausted(self.scored_since_best, self.config.patience):
            print(f"stopping early: no better {column} in {self.config.patience} scored epochs "
                  f"(best at epoch {self.best_epoch})")
            self.model.stop_training = True

    def _halve_learning_rate_on_plateau(self, done: int) -> bool:
        decay = self.config.decay_patience
        if self.config.lr_schedule != "plateau" or not decay or self.scored_since_decay < decay:
            return False
        # A plateau: smaller steps often find a better model than stopping would.
        self.model.optimizer.learning_rate.assign(learning_rate_of(self.model) * 0.5)
        if self.encoder is not None:
            self.encoder.optimizer.learning_rate.assign(learning_rate_of(self.encoder) * 0.5)
        self.last_decay, self.scored_since_decay = done, 0
        return True

    def _write_epoch(self, done: int, row: Dict[str, object]) -> None:
        # The checkpoint first, then the state that points at it: a crash between the two
        # only repeats one epoch. The optimizer (learning rate included) is saved with the checkpoint.
        if self.encoder is not None:
            self.encoder.save(os.path.join(self.run_dir, LAST_ENCODER))
        self.captioner.save(os.path.join(self.run_dir, self.last_model))
        write_json(os.path.join(self.run_dir, self.state_file),
                   {"epochs_done": done, "monitor": self.monitor, "best": self.best, "best_epoch": self.best_epoch,
                    "last_decay_epoch": self.last_decay, "scored_since_best": self.scored_since_best,
                    "scored_since_decay": self.scored_since_decay,
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
