"""The merge decoder (Tanti et al. 2017/2018): the LSTM reads words only; the image joins after it.

    image features -> Dropout -> Dense(units, relu) ----------------------.
    caption tokens -> Embedding(mask_zero) -> Dropout -> LSTM(units) -> add -> Dense(units, relu)
                                                                           -> Dense(vocabulary, softmax)

The LSTM returns its output at every position, so one pass over `<start> w1 .. wn` predicts
`w1 .. wn <end>` (teacher forcing). Because the image never enters the LSTM, the prediction at
position t is exactly what the tutorials' prefix formulation computes from the prefix of length t.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from config import Config


def build_merge_model(config: Config, vocabulary_size: int, feature_dim: int) -> keras.Model:
    image_features = keras.Input(shape=(feature_dim,), name="image_features")
    caption_tokens = keras.Input(shape=(None,), dtype="int32", name="caption_tokens")

    image = layers.Dropout(config.dropout, name="image_dropout")(image_features)
    image = layers.Dense(config.units, activation="relu", name="image_projection")(image)

    words = layers.Embedding(vocabulary_size, config.embedding_dim, mask_zero=True, name="word_embedding")(caption_tokens)
    words = layers.Dropout(config.dropout, name="word_dropout")(words)
    words = layers.LSTM(config.units, return_sequences=True, name="caption_lstm")(words)

    # The image vector is broadcast over every caption position.
    image_per_step = layers.Reshape((1, config.units), name="image_per_step")(image)
    merged = layers.Add(name="merge")([words, image_per_step])
    hidden = layers.Dense(config.units, activation="relu", name="merged_projection")(merged)
    next_word = layers.Dense(vocabulary_size, activation="softmax", name="next_word")(hidden)
    return keras.Model([image_features, caption_tokens], next_word, name="merge_captioner")


def build_model(config: Config, vocabulary_size: int, feature_shape: tuple) -> keras.Model:
    """The decoder named by `config.decoder`, for features of `feature_shape` (see the run's metadata)."""
    if config.decoder == "attention":
        if len(feature_shape) != 2:
            raise ValueError("--decoder attention needs one feature vector per image region, but this run folder "
                             "holds one vector per image: run preprocess.py --features spatial into a new --run_dir")
        from decoders.attention import build_attention_model

        return build_attention_model(config, vocabulary_size, feature_shape)
    if len(feature_shape) != 1:
        raise ValueError("the merge decoder needs one feature vector per image, but this run folder holds "
                         "spatial features: use --decoder attention, or preprocess into a new --run_dir "
                         "without --features spatial")
    return build_merge_model(config, vocabulary_size, feature_shape[0])


class RealPositions(layers.Layer):
    """(batch, positions, d) -> (words, d): only the positions whose next word is not padding, in row order."""

    def call(self, hidden, next_words):
        return tf.boolean_mask(hidden, tf.not_equal(next_words, 0))

    def compute_output_shape(self, hidden_shape, next_words_shape):
        return (None, hidden_shape[-1])


def build_training_model(model: keras.Model) -> keras.Model:
    """The same layers and weights, with the softmax computed at real positions only.

    About 45% of a shuffled batch's positions are padding (its captions are padded to the longest
    one), and the vocabulary-sized output layer is the largest matrix product of a training step. This model
    also reads `next_words` (the padded targets), gathers the positions that have a real next word
    and only then applies the output layer; it returns (words, vocabulary) probabilities, to be
    compared with the flattened real next words (`caption_batches(..., flat_targets=True)`).
    The loss, its gradients and the attention penalty are those of `model` with padding weighted 0.
    It shares `model`'s optimizer, so saving `model` saves the training state.
    """
    next_words = keras.Input(shape=(None,), dtype="int32", name="next_words")
    output_layer = model.get_layer("next_word")
    real_hidden = RealPositions(name="real_positions")(output_layer.input, next_words)
    inputs = {tensor.name: tensor for tensor in model.inputs}
    training_model = keras.Model({**inputs, "next_words": next_words}, output_layer(real_hidden),
                                 name=model.name + "_training")
    # Built on `model`'s variable order, which is the order load_model restores the optimizer state in.
    model.optimizer.build(model.trainable_variables)
    training_model.compile(optimizer=model.optimizer, loss=keras.losses.SparseCategoricalCrossentropy(),
                           metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return training_model


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  # Averaged over real words only: padding carries weight 0 and must not dilute the loss.
                  loss=keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight"),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
