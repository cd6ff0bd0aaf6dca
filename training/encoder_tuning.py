"""The pieces of encoder fine-tuning that touch tensors: which CNN layers train, one joint step through
encoder and decoder, batches of images with all their captions, and the dev images' features under the
encoder as it trains. training/finetune.py runs the phase with them."""
from __future__ import annotations

import os
from typing import Dict, List

import keras
import numpy as np
import tensorflow as tf

from inputs.encoders import encode_pixels
from inputs.images import ImageError, image_reader, load_batches
from model import build_training_model


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
    token_table = tf.constant(caption_tokens)
    return (tf.data.Dataset.range(len(paths))
            .shuffle(len(paths), seed=seed, reshuffle_each_iteration=False)
            .map(image_reader(paths, size, failures), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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
