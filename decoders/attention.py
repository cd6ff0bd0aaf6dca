"""The attention decoder (after Xu et al. 2015, "Show, attend and tell", soft attention).

    locations (L x D) -> Dense(units, relu): one vector per image region, computed once per image
    before each word: attention over the regions from the previous LSTM state -> gated context
    LSTM(units) reads [word embedding, context]; its state starts from the mean region
    next word <- Dense(vocabulary, softmax)(dropout(tanh(embedding + W_h h + W_z context)))

Training adds the doubly stochastic penalty: mean over regions of (1 - sum over words of attention)^2,
so that over a caption every region receives some attention. The regions are projected to `units`
first (Xu et al. attend over the raw 512-d VGG map); with MobileNetV2's 1280-d regions this keeps
the LSTM input, and so each step, small on a CPU.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from config import Config


@keras.saving.register_keras_serializable(package="captioner")
class AttentionLSTM(layers.Layer):
    """An LSTM that, before reading each word, attends over the image regions.

    call(regions, words) returns per position the LSTM output, the gated context vector and the
    attention weights over the regions (they sum to 1). Positions whose word is padding
    (`words_mask` False) are left out of the doubly stochastic penalty.
    """

    def __init__(self, units: int, attention_units: int, regularization: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.attention_units, self.regularization = units, attention_units, regularization
        self.init_state = layers.Dense(2 * units, activation="tanh", name="init_state")
        self.region_keys = layers.Dense(attention_units, use_bias=False, name="region_keys")
        self.state_query = layers.Dense(attention_units, name="state_query")
        self.attention_score = layers.Dense(1, use_bias=False, name="attention_score")
        self.context_gate = layers.Dense(1, activation="sigmoid", name="context_gate")
        self.cell = layers.LSTMCell(units, name="cell")

    def build(self, regions_shape, words_shape):
        region_dim, word_dim = regions_shape[-1], words_shape[-1]
        self.init_state.build((None, region_dim))
        self.region_keys.build((None, None, region_dim))
        self.state_query.build((None, self.units))
        self.attention_score.build((None, None, self.attention_units))
        self.context_gate.build((None, self.units))
        self.cell.build((None, word_dim + region_dim))

    def start(self, regions):
        """(keys of the regions, initial [h, c]) for a batch of images."""
        state = self.init_state(tf.reduce_mean(regions, axis=1))
        return self.region_keys(regions), [state[:, :self.units], state[:, self.units:]]

    def step(self, word, state, regions, keys):
        """One word for a batch: (output, new state, context, attention weights)."""
        hidden = state[0]
        scores = self.attention_score(tf.tanh(keys + self.state_query(hidden)[:, None, :]))[..., 0]
        weights = tf.nn.softmax(scores, axis=-1)
        context = self.context_gate(hidden) * tf.reduce_sum(weights[..., None] * regions, axis=1)
        output, state = self.cell(tf.concat([word, context], axis=-1), state)
        return output, state, context, weights

    def call(self, regions, words, words_mask=None, training=None):
        keys, state = self.start(regions)
        batch, regions_count = tf.shape(regions)[0], tf.shape(regions)[1]

        def one_word(carry, word):
            output, state, context, weights = self.step(word, [carry[0], carry[1]], regions, keys)
            return state[0], state[1], output, context, weights

        initial = (state[0], state[1], tf.zeros_like(state[0]), tf.zeros([batch, tf.shape(regions)[2]]),
                   tf.zeros([batch, regions_count]))
        _, _, outputs, contexts, weights = tf.scan(one_word, tf.transpose(words, [1, 0, 2]), initializer=initial)
        outputs, contexts, weights = (tf.transpose(t, [1, 0, 2]) for t in (outputs, contexts, weights))
        if training and self.regularization:
            real = tf.ones(tf.shape(weights)[:2]) if words_mask is None else tf.cast(words_mask, weights.dtype)
            attention_received = tf.reduce_sum(weights * real[..., None], axis=1)
            self.add_loss(self.regularization * tf.reduce_mean(tf.square(1.0 - attention_received)))
        return outputs, contexts, weights

    def get_config(self):
        return {**super().get_config(), "units": self.units, "attention_units": self.attention_units,
                "regularization": self.regularization}


def build_attention_model(config: Config, vocabulary_size: int, feature_shape) -> keras.Model:
    regions_count, region_dim = feature_shape
    image_features = keras.Input(shape=(regions_count, region_dim), name="image_features")
    caption_tokens = keras.Input(shape=(None,), dtype="int32", name="caption_tokens")

    regions = layers.Dense(config.units, activation="relu", name="region_projection")(image_features)
    embedding = layers.Embedding(vocabulary_size, config.embedding_dim, mask_zero=True, name="word_embedding")
    words = embedding(caption_tokens)
    words = layers.Dropout(config.dropout, name="word_dropout")(words)
    outputs, contexts, _ = AttentionLSTM(config.units, config.attention_units, config.attention_regularization,
                                         name="attention_lstm")(regions, words)
    # Xu et al.'s deep output: the previous word, the LSTM output and the context all feed the word choice.
    hidden = layers.Add(name="deep_output")([
        words, layers.Dense(config.embedding_dim, name="output_projection")(outputs),
        layers.Dense(config.embedding_dim, name="context_projection")(contexts)])
    hidden = layers.Activation("tanh", name="deep_output_tanh")(hidden)
    hidden = layers.Dropout(config.dropout, name="output_dropout")(hidden)
    next_word = layers.Dense(vocabulary_size, activation="softmax", name="next_word")(hidden)
    return keras.Model([image_features, caption_tokens], next_word, name="attention_captioner")


def attention_weights(model: keras.Model, image_features: np.ndarray, caption_inputs: list) -> list:
    """For each image and the tokens its decoder read (`<start> w1 .. wn`), the attention over regions
    at each step: row t holds the weights with which the token after input t was chosen.

    The caption is fed back with teacher forcing: the weights at step t depend only on the image
    and the tokens before t, so they are the weights the decoder used when it chose that token,
    whichever search (greedy or beam) chose the caption. Returns arrays of shape (steps, regions).
    """
    results = []
    for features, inputs in zip(image_features, caption_inputs):
        regions = model.get_layer("region_projection")(tf.constant(features[None], tf.float32))
        words = tf.gather(model.get_layer("word_embedding").embeddings, tf.constant([inputs], tf.int32))
        _, _, weights = model.get_layer("attention_lstm")(regions, words, training=False)
        results.append(weights.numpy()[0])
    return results
