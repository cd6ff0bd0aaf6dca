"""Stage 2c: fine-tune the top of the image encoder together with the decoder of a trained run.

    python train.py --run_dir runs/flickr8k                        # a decoder on frozen features first
    python train.py --run_dir runs/flickr8k --fine_tune_encoder    # then the CNN's top layers train too
    python train.py --run_dir runs/flickr8k --objective scst       # self-critical training after it works as before

This phase reads the training images, not the cached features, through tf.data, with the decoding and
resizing of preprocess and predict (encoders.load_image). Each step encodes a batch of images once and
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
from typing import Dict, List

import keras
import numpy as np
import tensorflow as tf

from config import Config, read_json, save_config
from encoders import ENCODERS, ImageError, build_encoder, encode_pixels, load_batches, load_image
from feature_store import FeatureStore, feature_shape, open_features
from history import read_history, write_history
from model import build_training_model, compile_model
from preprocess import METADATA, extract, report, write_json
from train import (BEST_MODEL, ENCODER_MODEL, FINE_TUNE_STATE, HISTORY, LAST_ENCODER, LAST_FINE_TUNE_MODEL,
                   LAST_SCST_MODEL, SCST_STATE, XE_MODEL, DevScorer, EpochBookkeeping, load_run, patience_exhausted)

FROZEN_DIR = "frozen_encoder"
# What the frozen-encoder copy of the run needs to be a run folder of its own. Self-critical files move
# with it: they belong to the frozen features, and self-critical training after fine-tuning starts afresh.
FROZEN_COPIES = (METADATA, "vocabulary.json", "captions.json", BEST_MODEL, HISTORY, "training_state.json",
                 "config_preprocess.json", "config_train.json")
FROZEN_MOVES = (XE_MODEL, SCST_STATE, LAST_SCST_MODEL, "config_train_scst.json")


def cnn_layers(encoder_model: keras.Model) -> List[keras.layers.Layer]:
    """The layers of the CNN inside an encoder built by encoders.build_encoder, input to output."""
    return next(layer for layer in encoder_model.layers if isinstance(layer, keras.Model)).layers


def make_top_trainable(encoder_model: keras.Model, count: int) -> List[str]:
    """Makes the top `count` layers with weights trainable and every other layer frozen; their names."""
    weighted = [layer for layer in cnn_layers(encoder_model) if layer.weights]
    if not 1 <= count <= len(weighted):
        raise ValueError(f"--fine_tune_layers {count}: this encoder's CNN has {len(weighted)} layers with weights; "
                         f"choose 1 to {len(weighted)}")
    chosen = {id(layer) for layer in weighted[-count:]}
    encoder_model.trainable = True
    for layer in cnn_layers(encoder_model):
        layer.trainable = id(layer) in chosen
    return [layer.name for layer in weighted[-count:]]


class JointStep:
    """One teacher-forcing step through encoder and decoder. The batch's images are encoded once (batch
    normalisation in inference mode) and each image's features serve all its captions; the loss is the
    decoder's cross-entropy over real words (plus the attention penalty), as in train.py."""

    def __init__(self, encoder: keras.Model, decoder: keras.Model):
        self.encoder, self.decoder = encoder, decoder
        self.view = build_training_model(decoder)  # builds the decoder's optimizer in its variables' order
        encoder.optimizer.build(encoder.trainable_variables)
        # One trace for every batch: the last, smaller batch of an epoch must not trace the CNN's gradient again.
        self.step = tf.function(self._step, input_signature=[
            tf.TensorSpec([None, *encoder.input_shape[1:]], tf.float32), tf.TensorSpec([None, None, None], tf.int32)])

    def _step(self, pixels, tokens):
        shape = tf.shape(tokens)  # (images, captions per image, positions); absent captions are all padding
        flat = tf.reshape(tokens, [-1, shape[2]])
        present = tf.reduce_any(tf.not_equal(flat, 0), axis=1)
        image_of_caption = tf.boolean_mask(tf.repeat(tf.range(shape[0]), shape[1]), present)
        flat = tf.boolean_mask(flat, present)
        flat = flat[:, :tf.reduce_max(tf.reduce_sum(tf.cast(tf.not_equal(flat, 0), tf.int32), axis=1))]
        inputs, targets = flat[:, :-1], flat[:, 1:]
        words = tf.boolean_mask(targets, tf.not_equal(targets, 0))
        encoder_variables = self.encoder.trainable_variables
        decoder_variables = self.decoder.trainable_variables
        with tf.GradientTape() as tape:
            image_features = self.encoder(pixels, training=False)
            probabilities = self.view({"image_features": tf.gather(image_features, image_of_caption),
                                       "caption_tokens": inputs, "next_words": targets}, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(words, probabilities))
            if self.view.losses:  # the attention decoder's doubly stochastic penalty
                loss += tf.add_n(self.view.losses)
        gradients = tape.gradient(loss, encoder_variables + decoder_variables)
        self.encoder.optimizer.apply_gradients(zip(gradients[:len(encoder_variables)], encoder_variables))
        self.decoder.optimizer.apply_gradients(zip(gradients[len(encoder_variables):], decoder_variables))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(probabilities, axis=-1, output_type=tf.int32), words),
                                          tf.float32))
        return loss, accuracy


def image_caption_batches(paths: List[str], caption_tokens: np.ndarray, size: int, images_per_batch: int,
                          seed: int, failures: Dict[int, ImageError]):
    """tf.data batches of (pixels, every caption of each image) in a seeded random order; images that cannot
    be read are left out and recorded in `failures` (index -> error)."""
    def load(index):
        index = int(index)
        try:
            return load_image(paths[index], size)[0], True
        except ImageError as error:
            failures[index] = error
            return np.zeros((size, size, 3), np.float32), False

    @tf.autograph.experimental.do_not_convert
    def load_in_graph(index):
        pixels, readable = tf.numpy_function(load, [index], [tf.float32, tf.bool], stateful=True)
        pixels.set_shape([size, size, 3])
        readable.set_shape([])
        return index, pixels, readable

    token_table = tf.constant(caption_tokens)
    return (tf.data.Dataset.range(len(paths))
            .shuffle(len(paths), seed=seed, reshuffle_each_iteration=False)
            .map(load_in_graph, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .filter(lambda index, pixels, readable: readable)
            .batch(images_per_batch)
            .map(lambda index, pixels, readable: (pixels, tf.gather(token_table, index)))
            .prefetch(2))


def captions_per_image(names: List[str], captions: Dict[str, List[str]], vocabulary, length: int) -> np.ndarray:
    """(images, most captions of an image, length + 2) token ids; an image with fewer captions gets rows of padding."""
    most = max(len(captions[name]) for name in names)
    tokens = np.zeros((len(names), most, length + 2), np.int32)
    for row, name in enumerate(names):
        for column, caption in enumerate(captions[name]):
            tokens[row, column] = vocabulary.encode(caption, length)
    return tokens


class DevImages:
    """The dev images' pixels, read once, and their features under the encoder as it is now."""

    def __init__(self, names: List[str], image_dir: str, size: int, dtype: str):
        self.names, pixels, self.dtype = [], [], dtype
        paths = [os.path.join(image_dir, name) for name in names]
        for indices, batch, _, _ in load_batches(paths, size, 32):
            self.names += [names[i] for i in indices]
            pixels.append(batch.astype(np.uint8))  # exact: load_image's pixels are whole numbers
        self.pixels = np.concatenate(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)

    def features(self, encoder: keras.Model) -> np.ndarray:
        # Rounded to the run's store precision, as evaluate.py will read them after the phase.
        return np.concatenate([encode_pixels(encoder, self.pixels[start:start + 32].astype(np.float32))
                               for start in range(0, len(self.pixels), 32)]).astype(self.dtype).astype(np.float32)


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


def train_fine_tune(config: Config) -> dict:
    if config.fine_tune_epochs < 1 or config.fine_tune_batch_size < 1:
        raise ValueError("--fine_tune_epochs and --fine_tune_batch_size must be at least 1")
    if config.strategy != "none":
        raise ValueError("--fine_tune_encoder runs on one machine: leave out --strategy")
    run_dir = config.resolved_run_dir()
    for name, hint in ((METADATA, "preprocess.py"), ("captions.json", "preprocess.py"), (BEST_MODEL, "train.py")):
        if not os.path.exists(os.path.join(run_dir, name)):
            raise ValueError(f"{run_dir}: no {name}; encoder fine-tuning continues a trained run: run {hint} "
                             f"--run_dir {run_dir} first")
    frozen_dir = os.path.join(run_dir, FROZEN_DIR)
    state_path = os.path.join(run_dir, FINE_TUNE_STATE)
    resuming = config.resume and all(os.path.exists(os.path.join(run_dir, name))
                                     for name in (FINE_TUNE_STATE, LAST_FINE_TUNE_MODEL, LAST_ENCODER))
    metadata, captions, vocabulary = load_run(run_dir)
    # Where the run with its frozen encoder is: the run folder itself until the first fine-tuning moves it.
    source_dir = frozen_dir if os.path.exists(os.path.join(frozen_dir, METADATA)) else run_dir
    if source_dir == run_dir and metadata.get("fine_tuned_encoder"):
        raise ValueError(f"{run_dir}: its encoder is fine-tuned but {frozen_dir} is missing; fine-tune a copy "
                         f"of a run with a frozen encoder")
    frozen_metadata = load_run(source_dir)[0]
    spec = ENCODERS[frozen_metadata["encoder"]]
    length = frozen_metadata["max_caption_length"]
    weights = frozen_metadata["weights"] if config.weights == "auto" else config.weights
    keras.utils.set_random_seed(config.seed)

    if resuming:
        state = read_json(state_path)
        decoder = keras.models.load_model(os.path.join(run_dir, LAST_FINE_TUNE_MODEL))
        encoder = keras.models.load_model(os.path.join(run_dir, LAST_ENCODER))
        print(f"resuming encoder fine-tuning after epoch {state['epochs_done']} "
              f"(best dev_cider {state['best']:.4f} at epoch {state['best_epoch']})")
    else:
        if config.resume:
            print("no encoder fine-tuning to resume in this run folder: starting it", file=sys.stderr)
        # Always from the frozen run: a restarted phase does not build on the fine-tuning before it.
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
        shutil.copyfile(os.path.join(frozen_dir, BEST_MODEL), os.path.join(run_dir, BEST_MODEL))
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

    phase = dataclasses.replace(config, epochs=config.fine_tune_epochs)
    finished = (patience_exhausted(state["epochs_done"], state.get("best_epoch", 0), config.patience)
                or state["epochs_done"] >= config.fine_tune_epochs)
    if not finished:
        save_config(config, run_dir, "train_fine_tune")
        state = fine_tune_epochs(run_dir, phase, state, encoder, decoder, captions, vocabulary, frozen_metadata,
                                 spec.input_size, length)
    else:
        print(f"encoder fine-tuning already finished ({state['epochs_done']} epochs, best at epoch "
              f"{state.get('best_epoch', 0)})")
    if not metadata["fine_tuned_encoder"].get("features_written"):
        write_json(os.path.join(run_dir, METADATA), write_fine_tuned_features(run_dir, metadata, frozen_metadata))
    kept = (f"model saved as {os.path.join(run_dir, BEST_MODEL)} with its encoder {ENCODER_MODEL}"
            if state.get("best_epoch") else f"no epoch beat the frozen encoder's model; {BEST_MODEL} is still it")
    print(f"best greedy dev CIDEr-D {state['best']:.4f} at fine-tuning epoch {state.get('best_epoch', 0)}; {kept}; "
          f"the run before fine-tuning is {frozen_dir}")
    return state


def fine_tune_epochs(run_dir: str, config: Config, state: dict, encoder: keras.Model, decoder: keras.Model,
                     captions: dict, vocabulary, frozen_metadata: dict, size: int, length: int) -> dict:
    image_dir = frozen_metadata["image_dir"]
    names = [name for name in captions["train"] if captions["train"][name]]
    on_disk = [name for name in names if os.path.isfile(os.path.join(image_dir, name))]
    if not on_disk:
        raise ValueError(f"{image_dir}: none of the {len(names)} training images is there; fine-tuning reads the "
                         f"images themselves (the folder preprocess.py read them from)")
    if len(on_disk) < len(names):
        missing = [name for name in names if name not in set(on_disk)]
        print(f"skipped {len(missing)} training image(s): missing file (e.g. {missing[0]})", file=sys.stderr)
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
        start = dev_scorer()
        state.update(best=start["dev_cider"], best_epoch=0, monitor="cider")
        print(f"encoder fine-tuning from the frozen encoder's model: greedy dev CIDEr-D {start['dev_cider']:.4f}, "
              f"BLEU-4 {start['dev_bleu4']:.4f}")
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

