"""Encoder fine-tuning: the top of the image encoder together with the decoder of a trained run.

    python train.py --run_dir runs/flickr8k                        # a decoder on frozen features first
    python train.py --run_dir runs/flickr8k --fine_tune_encoder    # then the CNN's top layers train too
    python train.py --run_dir runs/flickr8k --objective scst       # self-critical training after it works as before

This phase reads the training images, not the cached features, through tf.data, with the decoding and
resizing of preprocess and predict (inputs/images.py). Each step encodes a batch of images once and
trains on all captions of those images, so the CNN's cost is paid once per image, not once per caption.
The top `--fine_tune_layers` layers with weights train at `--encoder_learning_rate`, the decoder at
`--fine_tune_learning_rate`, with teacher forcing as in cross-entropy training. Batch normalisation
stays in inference mode: its statistics never change (the shared MobileNetV2 weights fold them).

The run then owns its encoder: the best epoch's encoder is `encoder.keras` beside `model.keras`, and
metadata.json says so. When the phase ends it writes every image's features from that encoder into the
run's feature store, so evaluate.py, self-critical training, package.py and export.py read a fine-tuned
run like any other, at the speed of cached features. The run as it was before (decoder, features,
metadata) is kept whole in RUN/frozen_encoder, a run folder of its own: evaluate.py --run_dir RUN/frozen_encoder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
from typing import Dict, List, Tuple

import keras
import numpy as np

from config import Config
from inputs.encoders import ENCODERS, build_encoder
from inputs.extraction import extract, report
from inputs.feature_store import FeatureStore, feature_shape, open_features
from inputs.images import ImageError
from inputs.json_files import read_json, write_json
from inputs.run_folder import (BEST_MODEL, CAPTIONS, ENCODER_MODEL, FINE_TUNE_STATE, FROZEN_DIR, HISTORY,
                               LAST_ENCODER, LAST_FINE_TUNE_MODEL, LAST_SCST_MODEL, METADATA, SCST_STATE, STATE,
                               VOCABULARY, XE_MODEL, config_file, load_run, save_config)
from model import compile_model
from training.bookkeeping import DevScorer, EpochBookkeeping, finished_before, resumable_state, score_starting_model
from training.encoder_tuning import DevImages, JointStep, captions_per_image, image_caption_batches, make_top_trainable
from training.history import read_history, write_history

# What the frozen-encoder copy of the run needs to be a run folder of its own. Self-critical files move
# with it: they belong to the frozen features, and self-critical training after fine-tuning starts afresh.
FROZEN_COPIES = (METADATA, VOCABULARY, CAPTIONS, BEST_MODEL, HISTORY, STATE, config_file("preprocess"),
                 config_file("train"))
FROZEN_MOVES = (XE_MODEL, SCST_STATE, LAST_SCST_MODEL, config_file("train_scst"))


def keep_frozen_run(run_dir: str, metadata: dict) -> None:
    """Moves the run as it is into RUN/frozen_encoder, a complete run folder; safe to repeat after a crash."""
    partial = os.path.join(run_dir, FROZEN_DIR + ".partial")
    os.makedirs(partial, exist_ok=True)
    store = metadata["feature_store"]["name"]
    for name in FROZEN_COPIES:
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copy2(os.path.join(run_dir, name), os.path.join(partial, name))
    for name in FROZEN_MOVES + tuple(store + suffix for suffix in (".bin", ".index", ".json")):
        if os.path.exists(os.path.join(run_dir, name)):
            os.replace(os.path.join(run_dir, name), os.path.join(partial, name))
    os.replace(partial, os.path.join(run_dir, FROZEN_DIR))


def write_fine_tuned_features(run_dir: str, metadata: dict, frozen_metadata: dict) -> dict:
    """Every image of the frozen store, encoded by `encoder.keras` into the run's store; the new metadata."""
    frozen_dir = os.path.join(run_dir, FROZEN_DIR)
    _, frozen_rows = open_features(frozen_dir, frozen_metadata)
    encoder_path = os.path.join(run_dir, ENCODER_MODEL)
    encoder = keras.models.load_model(encoder_path, compile=False)
    with open(encoder_path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()[:16]
    info = metadata["feature_store"]
    # The digest names this encoder: features of an earlier fine-tuning are not mixed with these.
    identity = {**info["identity"], "weights": f"fine-tuned {ENCODER_MODEL} sha256 {digest}"}
    store = FeatureStore(run_dir, info["name"], feature_shape(metadata), info["dtype"], identity)
    todo = [name for name in frozen_rows if name not in store]
    print(f"writing the fine-tuned encoder's features of {len(todo)} images into {store.rows_path}")
    skipped = extract(store, [os.path.join(metadata["image_dir"], name) for name in todo], todo, encoder,
                      metadata["input_size"], 32)
    report("skipped", skipped)
    captions = load_run(run_dir)[1]
    images = {split: {**counts, "with_features": sum(name in store for name in captions[split])}
              for split, counts in metadata["images"].items()}
    return {**metadata, "feature_store": {**info, "identity": identity}, "images": images,
            "fine_tuned_encoder": {**metadata["fine_tuned_encoder"], "features_written": True}}


def earlier_rows(run_dir: str) -> List[dict]:
    """history.csv's rows of the phases before fine-tuning: a restarted fine-tuning forgets its own rows
    and those of any phase after it."""
    path = os.path.join(run_dir, HISTORY)
    rows = read_history(path) if os.path.exists(path) else []
    first = min((row["epoch"] for row in rows if row["objective"] == "fine_tune"), default=None)
    return [row for row in rows if first is None or row["epoch"] < first]


def frozen_source(run_dir: str, metadata: dict) -> str:
    """Where the run with its frozen encoder is: the run folder itself until the first fine-tuning moves it."""
    frozen_dir = os.path.join(run_dir, FROZEN_DIR)
    if os.path.exists(os.path.join(frozen_dir, METADATA)):
        return frozen_dir
    if metadata.get("fine_tuned_encoder"):
        raise ValueError(f"{run_dir}: its encoder is fine-tuned but {frozen_dir} is missing; fine-tune a copy "
                         f"of a run with a frozen encoder")
    return run_dir


def start_fine_tuning(config: Config, run_dir: str, source_dir: str, metadata: dict, frozen_metadata: dict,
                      weights: str) -> Tuple[keras.Model, keras.Model, dict, dict]:
    """A new fine-tuning from the frozen run (never from an earlier fine-tuning): (encoder, decoder, state,
    the run's new metadata). The run before it moves into FROZEN_DIR."""
    decoder = keras.models.load_model(os.path.join(source_dir, BEST_MODEL), compile=False)
    compile_model(decoder, config.fine_tune_learning_rate)
    encoder = build_encoder(frozen_metadata["encoder"], weights, frozen_metadata["encoder_seed"],
                            frozen_metadata.get("features", "global"))
    trained = make_top_trainable(encoder, config.fine_tune_layers)
    encoder.compile(optimizer=keras.optimizers.Adam(config.encoder_learning_rate))
    if source_dir == run_dir:  # only now: a refused command leaves the run folder as it was
        keep_frozen_run(run_dir, metadata)
    # A restart: the checkpoints and state of the fine-tuning before, and of any self-critical
    # training after it, belong to a model this phase replaces.
    for name in (FINE_TUNE_STATE, LAST_FINE_TUNE_MODEL, LAST_ENCODER) + FROZEN_MOVES:
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
    # Until an epoch beats it, the run captions with the frozen encoder and the decoder it started from.
    encoder.save(os.path.join(run_dir, ENCODER_MODEL))
    shutil.copyfile(os.path.join(run_dir, FROZEN_DIR, BEST_MODEL), os.path.join(run_dir, BEST_MODEL))
    rows = earlier_rows(run_dir)
    write_history(os.path.join(run_dir, HISTORY), rows)
    best_earlier = max(rows, key=lambda row: row.get("dev_cider", -1.0), default={})
    state = {"epochs_done": 0, "epoch_offset": int(max((row["epoch"] for row in rows), default=0)),
             "kept_before": int(best_earlier.get("epoch", 0))}
    metadata = {**frozen_metadata, "fine_tuned_encoder": {
        "file": ENCODER_MODEL, "from_weights": weights, "trained_layers": trained,
        "encoder_learning_rate": config.encoder_learning_rate,
        "decoder_learning_rate": config.fine_tune_learning_rate, "features_written": False}}
    write_json(os.path.join(run_dir, METADATA), metadata)
    return encoder, decoder, state, metadata


def train_fine_tune(config: Config) -> dict:
    """Encoder fine-tuning of a trained run, then the fine-tuned encoder's features; the phase's final state."""
    if config.fine_tune_epochs < 1 or config.fine_tune_batch_size < 1:
        raise ValueError("--fine_tune_epochs and --fine_tune_batch_size must be at least 1")
    if config.strategy != "none":
        raise ValueError("--fine_tune_encoder runs on one machine: leave out --strategy")
    run_dir = config.resolved_run_dir()
    for name, hint in ((METADATA, "preprocess.py"), (CAPTIONS, "preprocess.py"), (BEST_MODEL, "train.py")):
        if not os.path.exists(os.path.join(run_dir, name)):
            raise ValueError(f"{run_dir}: no {name}; encoder fine-tuning continues a trained run: run {hint} "
                             f"--run_dir {run_dir} first")
    metadata, captions, vocabulary = load_run(run_dir)
    source_dir = frozen_source(run_dir, metadata)
    frozen_metadata = load_run(source_dir)[0]
    weights = frozen_metadata["weights"] if config.weights == "auto" else config.weights
    keras.utils.set_random_seed(config.seed)
    state = resumable_state(run_dir, "fine_tune", config.resume, also_needs=(LAST_ENCODER,))
    if state is not None:
        decoder = keras.models.load_model(os.path.join(run_dir, LAST_FINE_TUNE_MODEL))
        encoder = keras.models.load_model(os.path.join(run_dir, LAST_ENCODER))
        print(f"resuming encoder fine-tuning after epoch {state['epochs_done']} "
              f"(best dev_cider {state['best']:.4f} at epoch {state['best_epoch']})")
    else:
        encoder, decoder, state, metadata = start_fine_tuning(config, run_dir, source_dir, metadata, frozen_metadata,
                                                              weights)
    if not finished_before(state, config.fine_tune_epochs, config.patience, "fine_tune"):
        save_config(config, run_dir, "train_fine_tune")
        phase = dataclasses.replace(config, epochs=config.fine_tune_epochs)
        state = fine_tune_epochs(run_dir, phase, state, encoder, decoder, captions, vocabulary, frozen_metadata)
    if not metadata["fine_tuned_encoder"].get("features_written"):
        write_json(os.path.join(run_dir, METADATA), write_fine_tuned_features(run_dir, metadata, frozen_metadata))
    kept = (f"model saved as {os.path.join(run_dir, BEST_MODEL)} with its encoder {ENCODER_MODEL}"
            if state.get("best_epoch") else f"no epoch beat the frozen encoder's model; {BEST_MODEL} is still it")
    print(f"best greedy dev CIDEr-D {state['best']:.4f} at fine-tuning epoch {state.get('best_epoch', 0)}; {kept}; "
          f"the run before fine-tuning is {os.path.join(run_dir, FROZEN_DIR)}")
    return state


def training_images(image_dir: str, captions: Dict[str, List[str]]) -> List[str]:
    """The training images with captions that are on disk; the missing ones are counted on stderr."""
    names = [name for name in captions if captions[name]]
    on_disk = [name for name in names if os.path.isfile(os.path.join(image_dir, name))]
    if not on_disk:
        raise ValueError(f"{image_dir}: none of the {len(names)} training images is there; fine-tuning reads the "
                         f"images themselves (the folder preprocess.py read them from)")
    if len(on_disk) < len(names):
        missing = [name for name in names if name not in set(on_disk)]
        print(f"skipped {len(missing)} training image(s): missing file (e.g. {missing[0]})", file=sys.stderr)
    return on_disk


def fine_tune_epochs(run_dir: str, config: Config, state: dict, encoder: keras.Model, decoder: keras.Model,
                     captions: dict, vocabulary, frozen_metadata: dict) -> dict:
    image_dir, length = frozen_metadata["image_dir"], frozen_metadata["max_caption_length"]
    size = ENCODERS[frozen_metadata["encoder"]].input_size
    on_disk = training_images(image_dir, captions["train"])
    tokens = captions_per_image(on_disk, captions["train"], vocabulary, length)
    paths = [os.path.join(image_dir, name) for name in on_disk]
    dev_names = [name for name in captions["dev"] if captions["dev"][name]]
    dev_images = DevImages(dev_names, image_dir, size, frozen_metadata["feature_store"]["dtype"])
    if not dev_images.names:
        raise ValueError(f"{image_dir}: no dev image could be read; fine-tuning keeps the best model by dev CIDEr-D")
    dev_scorer = DevScorer(decoder, dev_images.features(encoder), {name: row for row, name in enumerate(dev_images.names)},
                           captions["dev"], vocabulary, length, config)

    def score_with_current_encoder() -> Dict[str, float]:
        dev_scorer.image_features = dev_images.features(encoder)
        return dev_scorer()

    if "best" not in state:
        score_starting_model(state, dev_scorer, "the frozen encoder's model")
    step = JointStep(encoder, decoder)
    bookkeeping = EpochBookkeeping(run_dir, config, "cider", state, score_with_current_encoder, decoder,
                                   objective="fine_tune", epoch_offset=state["epoch_offset"],
                                   kept_before=state["kept_before"], encoder=encoder)
    bookkeeping.set_model(decoder)
    trainable = sum(int(np.prod(variable.shape)) for variable in encoder.trainable_variables)
    print(f"fine-tuning {len(on_disk)} training images' encoder and decoder: {trainable:,} encoder weights train "
          f"at {float(encoder.optimizer.learning_rate.numpy()):.1e}, the decoder at "
          f"{float(decoder.optimizer.learning_rate.numpy()):.1e}; {config.fine_tune_batch_size} images per batch")
    for epoch in range(state["epochs_done"], config.fine_tune_epochs):
        failures: Dict[int, ImageError] = {}
        bookkeeping.on_epoch_begin(epoch)
        losses, accuracies = [], []
        for pixels, batch_tokens in image_caption_batches(paths, tokens, size, config.fine_tune_batch_size,
                                                          config.seed + epoch, failures):
            loss, accuracy = step.step(pixels, batch_tokens)
            losses.append(float(loss))
            accuracies.append(float(accuracy))
        if failures:
            kinds: Dict[str, List[str]] = {}
            for index, error in failures.items():
                kinds.setdefault(error.kind, []).append(on_disk[index])
            report("skipped", kinds)
        if not losses:
            raise ValueError(f"{image_dir}: none of the training images could be read")
        bookkeeping.on_epoch_end(epoch, {"loss": float(np.mean(losses)), "accuracy": float(np.mean(accuracies))})
        if decoder.stop_training:
            break
    return read_json(os.path.join(run_dir, FINE_TUNE_STATE))
