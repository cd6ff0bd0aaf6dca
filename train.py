"""Stage 2: run folder (features, vocabulary, captions) -> trained decoder `model.keras`.

    python train.py --epochs 20 --batch_size 32
    python train.py --decoder attention         # soft attention over image regions (spatial features)
    python train.py --strategy mirrored         # every local GPU; multi_worker: several machines (TF_CONFIG)
    python train.py --objective scst            # then: self-critical training of the same run (training/scst.py)
    python train.py --objective xe+scst         # both phases, one after the other, in one command
    python train.py --fine_tune_encoder         # or: train the encoder's top layers too (training/finetune.py)
    python train.py --features_from runs/tuned --seed 7 --run_dir runs/tuned_s7   # another decoder on a
                                                # run's (fine-tuned) features: an ensemble member

Runs preprocess.py first when the run folder has no metadata yet, so this one command goes from
images to a model. Keeps the model with the best dev CIDEr-D (`--monitor`), scoring greedy dev captions
every `--eval_every` epochs; `--resume` continues an interrupted run.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from contextlib import nullcontext
from typing import Dict

from config import TRAIN_FLAGS, Config, parse_config, quiet_tensorflow, run_script

quiet_tensorflow()

import keras  # noqa: E402

from data_loader import caption_batches, training_examples  # noqa: E402
from decoders import attention  # noqa: E402,F401  (registers the attention layer, so its models load)
from decoders.steps import decoder_name  # noqa: E402
from inputs.encoders import describe_fine_tuning  # noqa: E402
from inputs.feature_store import feature_shape, open_features  # noqa: E402
from inputs.json_files import read_json  # noqa: E402
from inputs.run_folder import (BEST_MODEL, CURVES, LAST_MODEL, METADATA, PREVIOUS_TRAINING, STATE,  # noqa: E402
                               TENSORBOARD, later_phase_files, load_run, move_previous_training, read_metadata,
                               save_config)
from model import build_model, build_training_model, compile_model  # noqa: E402
from preprocess import preprocess  # noqa: E402
from training.bookkeeping import (MONITORS, DevScorer, EpochBookkeeping, check_bookkeeping_flags,  # noqa: E402
                                  dev_scoring_due, finished_before, resumable_state)
from training.distributed import (ValidationScores, describe, distributed_batches, fit_distributed,  # noqa: E402
                                  is_chief, make_strategy, same_on_every_worker)
from training.finetune import train_fine_tune  # noqa: E402
from training.schedule import CosineSchedule  # noqa: E402
from training.scst import train_scst  # noqa: E402


def check_later_phase_features(config: Config) -> None:
    """--features_from on a phase that continues a trained run: allowed only where it names the run the
    folder's features were copied from (the same command with one flag more), since a later phase cannot
    swap the features its model was trained on."""
    if not config.features_from or (config.objective in ("xe", "xe+scst") and not config.fine_tune_encoder):
        return
    phase = "encoder fine-tuning" if config.fine_tune_encoder else "self-critical training"
    run_dir = config.resolved_run_dir()
    copied_from = read_metadata(run_dir).get("features_from") if os.path.exists(os.path.join(run_dir, METADATA)) \
        else None
    if copied_from != os.path.abspath(config.features_from):
        where = f"its features come from {copied_from}" if copied_from else "it has no features copied from that run"
        raise ValueError(f"--features_from {config.features_from}: {phase} continues the run in {run_dir}, and "
                         f"{where}; leave out --features_from (it starts a new run, with cross-entropy training)")


def train(config: Config) -> dict:
    """The training phase the configuration names; the phase's final state."""
    check_bookkeeping_flags(config)  # every phase's: a bad value is refused before any phase starts
    check_later_phase_features(config)
    if config.fine_tune_encoder:
        if config.objective != "xe":
            raise ValueError("--fine_tune_encoder and --objective scst are separate phases: run one command for each")
        return train_fine_tune(config)
    if config.objective == "scst":
        return train_scst(config)
    if config.objective == "xe+scst" and config.strategy != "none":
        raise ValueError("--objective xe+scst: self-critical training runs on one machine; train with --objective xe "
                         "and --strategy, then continue with --objective scst without --strategy")
    state = train_cross_entropy(config)
    if config.objective == "xe+scst":  # the whole recipe in one command: self-critical training follows
        return train_scst(config)
    return state


def ensure_features(config: Config, run_dir: str) -> None:
    """Runs preprocess first when the run folder has no features yet (or copies them, --features_from)."""
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


class TrainingData:
    """A run folder's features, vocabulary and captions as (feature row, caption tokens) pairs."""

    def __init__(self, run_dir: str):
        self.metadata, self.captions, self.vocabulary = load_run(run_dir)
        self.features, self.image_rows = open_features(run_dir, self.metadata)
        self.length = self.metadata["max_caption_length"]
        encode = self.vocabulary.encode
        self.train_rows, self.train_tokens = training_examples(self.captions["train"], self.image_rows, encode,
                                                               self.length)
        self.dev_rows, self.dev_tokens = training_examples(self.captions["dev"], self.image_rows, encode, self.length)
        if len(self.train_rows) == 0:
            raise ValueError(f"{run_dir}: no training captions with image features; run preprocess.py again")

    def describe(self, decoder: str) -> str:
        metadata = self.metadata
        encoder = (describe_fine_tuning(metadata["fine_tuned_encoder"]) if metadata.get("fine_tuned_encoder")
                   else f"weights {metadata['weights']}")
        return (f"training on {len(self.train_rows)} captions of {len(set(self.train_rows.tolist()))} images, "
                f"validating on {len(self.dev_rows)} dev captions; {decoder} decoder, encoder {metadata['encoder']} "
                f"({metadata.get('features', 'global')} features), {encoder}")


def open_model(config: Config, run_dir: str, data: TrainingData, monitor: str, strategy, chief: bool):
    """The model to train and its state: the last checkpoint with --resume, else a new model."""
    state = resumable_state(run_dir, "xe", config.resume)
    resuming = state is not None
    state = state or {"epochs_done": 0, "monitor": monitor, "best": None, "best_epoch": 0}
    # Checked before any worker builds a model: they must build the same variables in the same order.
    if strategy is not None and not same_on_every_worker(strategy, state["epochs_done"]):
        raise ValueError(f"the workers' run folders disagree on how many epochs are done (this one: "
                         f"{state['epochs_done']}): give every worker a copy of the chief's run folder")
    with strategy.scope() if strategy else nullcontext():
        if not resuming:
            model = build_model(config, len(data.vocabulary), feature_shape(data.metadata))
            compile_model(model, config.learning_rate)
            return model, state
        if state["monitor"] != monitor:
            raise ValueError(f"{run_dir} was trained with --monitor {state['monitor']}; resume with the same "
                             f"--monitor, or train from scratch in a new --run_dir")
        model = keras.models.load_model(os.path.join(run_dir, LAST_MODEL))
    trained_decoder = decoder_name(model)
    if trained_decoder != config.decoder:
        raise ValueError(f"{run_dir} holds a {trained_decoder} decoder; resume with --decoder {trained_decoder}, "
                         f"or train from scratch in a new --run_dir")
    print(f"resuming after epoch {state['epochs_done']} (best {MONITORS[monitor][0]} "
          f"{state['best']} at epoch {state['best_epoch']})")
    return model, state


def set_aside_earlier_training(run_dir: str, fresh: bool, chief: bool) -> None:
    """Before cross-entropy epochs: a fresh training moves the folder's earlier training aside, so no later
    phase starts from, or is reported as, the old run's; continuing a cross-entropy model that a later
    phase has already continued is refused, since that phase would then stand on an older model."""
    if fresh:
        moved = move_previous_training(run_dir) if chief else None
        if moved:
            print(f"{run_dir} held an earlier training: moved it into {moved} (its models, history and any later "
                  f"phase), so this one starts afresh; --resume continues a run instead")
        return
    later = later_phase_files(run_dir)
    if later:
        raise ValueError(f"{run_dir}: a later phase ({later[0]}) already continued this cross-entropy model, and "
                         f"more cross-entropy epochs would leave it behind: leave out --resume to train afresh (the "
                         f"earlier training moves into {PREVIOUS_TRAINING}), or train in a new --run_dir")


def train_cross_entropy(config: Config) -> dict:
    """Teacher-forcing training of a new decoder (or of the run's checkpoint, with --resume)."""
    if config.shard:
        raise ValueError("--shard is for preprocess.py: extract each part with it, merge without it, then train")
    # Before any other TensorFlow work: a multi-worker strategy must be set up at program start.
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    run_dir = config.resolved_run_dir()
    ensure_features(config, run_dir)
    data = TrainingData(run_dir)
    print(data.describe(config.decoder))
    if strategy is not None:
        print(f"--strategy {config.strategy}, global batch {config.batch_size}: {describe(strategy)}")

    keras.utils.set_random_seed(config.seed)
    # What is fitted is build_training_model's view of the model, which reads flattened targets.
    dev_batches = caption_batches(data.features, data.dev_rows, data.dev_tokens, config.batch_size, False,
                                  config.seed, flat_targets=True) if len(data.dev_rows) else None
    monitor = config.monitor
    if dev_batches is None:
        monitor = "loss"
        print("warning: no dev images with features; keeping the model with the lowest training loss",
              file=sys.stderr)
    model, state = open_model(config, run_dir, data, monitor, strategy, chief)
    if finished_before(state, config.epochs, config.patience, "xe"):
        return state
    set_aside_earlier_training(run_dir, state["epochs_done"] == 0, chief)
    # Saved only now: a command refused above must not overwrite the record of the run that made this folder.
    if chief:
        save_config(config, run_dir, "train")
    dev_scorer = None if dev_batches is None or not chief else DevScorer(
        model, data.features, data.image_rows, data.captions["dev"], data.vocabulary, data.length, config)
    with strategy.scope() if strategy else nullcontext():
        training_model = build_training_model(model)
    bookkeeping = EpochBookkeeping(run_dir, config, monitor, state, dev_scorer if strategy is None else None,
                                   model, writes=chief)
    if strategy is None:
        fit(training_model, config, data, dev_batches, state, bookkeeping, run_dir)
    else:
        fit_on_replicas(training_model, strategy, config, data, dev_batches, dev_scorer, state, bookkeeping)
        if not chief:
            print("this worker is done; the chief wrote the model into its run folder")
            return state
    state = read_json(os.path.join(run_dir, STATE))
    if state["best"] is None:
        raise ValueError(f"no epoch gave a usable {MONITORS[state['monitor']][0]} (the loss diverged?); "
                         f"try a lower --learning_rate")
    print(f"best {MONITORS[state['monitor']][0]} {state['best']:.4f} at epoch {state['best_epoch']}; "
          f"model saved as {os.path.join(run_dir, BEST_MODEL)}; curves in {os.path.join(run_dir, CURVES)}")
    return state


def cosine_schedule(config: Config, optimizer, steps_per_epoch: int):
    """The --lr_schedule cosine curve over this phase's epochs, or None for --lr_schedule plateau."""
    if config.lr_schedule != "cosine":
        return None
    return CosineSchedule(optimizer, config.learning_rate, steps_per_epoch * config.epochs,
                          round(steps_per_epoch * config.warmup_epochs))


def fit(training_model, config: Config, data: TrainingData, dev_batches, state: dict,
        bookkeeping: EpochBookkeeping, run_dir: str) -> None:
    """Keras's fit on one device, the bookkeeping as its callback."""
    # Keras warns that it cannot shuffle a tf.data pipeline; ours shuffles itself.
    warnings.filterwarnings("ignore", message=".*shuffle=True.*was passed")
    train_batches = caption_batches(data.features, data.train_rows, data.train_tokens, config.batch_size, True,
                                    config.seed, config.length_window, flat_targets=True)
    schedule = cosine_schedule(config, training_model.optimizer, len(train_batches))
    callbacks = [bookkeeping] if schedule is None else [schedule, bookkeeping]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, TENSORBOARD)))
    training_model.fit(train_batches, validation_data=dev_batches, epochs=config.epochs,
                       initial_epoch=state["epochs_done"], verbose=1 if sys.stdout.isatty() else 0,
                       callbacks=callbacks)


def fit_on_replicas(training_model, strategy, config: Config, data: TrainingData, dev_batches, dev_scorer,
                    state: dict, bookkeeping: EpochBookkeeping) -> None:
    """The distributed loop (training/distributed.py); the chief scores dev and tells the other workers."""
    validation_scores = ValidationScores(training_model)

    def chief_scores(epoch: int) -> Dict[str, float]:
        scores = {} if dev_batches is None else validation_scores(dev_batches)
        if dev_scorer is not None and dev_scoring_due(epoch + 1, config):
            scores.update(dev_scorer())
        return scores

    batches, steps = distributed_batches(strategy, data.features, data.train_rows, data.train_tokens,
                                         config.batch_size, config.seed, config.length_window)
    fit_distributed(training_model, strategy, batches, steps, config.epochs, state["epochs_done"], bookkeeping,
                    chief_scores, cosine_schedule(config, training_model.optimizer, steps))


def main(argv: list[str] | None = None) -> int:
    train(parse_config(TRAIN_FLAGS, __doc__.splitlines()[0], argv))
    return 0


if __name__ == "__main__":
    run_script(main)
