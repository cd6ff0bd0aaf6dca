"""One decoding step of each decoder: a word and the state in, next-word probabilities and the new state out.

The searches of decoding.py (greedy, beam, sampling, guided beam) are shared by every decoder; they
differ only in these steps. `MergeSteps` and `AttentionSteps` read one trained model's layers (so they
always see its current weights); `EnsembleSteps` averages several models' probabilities, each model
carrying its own state.
"""
from __future__ import annotations

from typing import List, Sequence

import tensorflow as tf

from config import ENSEMBLE_MEANS


class MergeSteps:
    """One step of the merge decoder: the LSTM reads the word; the projected image joins its output."""

    def __init__(self, model):
        self.embedding = model.get_layer("word_embedding")
        self.cell = model.get_layer("caption_lstm").cell
        self.image_projection = model.get_layer("image_projection")
        self.merged_projection = model.get_layer("merged_projection")
        self.next_word = model.get_layer("next_word")

    def start(self, image_features):
        """(per-image constants, initial LSTM state) for a batch of images."""
        zeros = tf.zeros([tf.shape(image_features)[0], self.cell.units])
        return [self.image_projection(image_features)], [zeros, zeros]

    def probabilities(self, tokens, state, constants):
        output, state = self.cell(read_words(self.embedding, tokens), state)
        return self.next_word(self.merged_projection(output + constants[0])), state


class AttentionSteps:
    """One step of the attention decoder: attend over the regions, read the word and the context."""

    def __init__(self, model):
        self.embedding = model.get_layer("word_embedding")
        self.region_projection = model.get_layer("region_projection")
        self.attention = model.get_layer("attention_lstm")
        self.output_projection = model.get_layer("output_projection")
        self.context_projection = model.get_layer("context_projection")
        self.next_word = model.get_layer("next_word")

    def start(self, image_features):
        regions = self.region_projection(image_features)
        keys, state = self.attention.start(regions)
        return [regions, keys], state

    def probabilities(self, tokens, state, constants):
        word = read_words(self.embedding, tokens)
        output, state, context, _ = self.attention.step(word, state, constants[0], constants[1])
        hidden = tf.tanh(word + self.output_projection(output) + self.context_projection(context))
        return self.next_word(hidden), state


def read_words(embedding, tokens):
    # The embedding table is read directly: the layer would attach a padding mask the cell cannot use.
    return tf.gather(embedding.embeddings, tokens)


class EnsembleSteps:
    """Several decoders as one: each keeps its own constants and state; their probabilities are averaged.

    `mean` "geometric" averages the log-probabilities and renormalises (a product: a word must suit
    every member); "arithmetic" averages the probabilities (a mixture: a word one member likes keeps
    part of its chance). On Flickr8k dev the geometric mean gave the better beam-search captions in
    four of the five ensembles compared, cross-entropy and self-critical (docs/results.md).
    """

    def __init__(self, members: Sequence, mean: str):
        if mean not in ENSEMBLE_MEANS:
            raise ValueError(f"--ensemble_mean must be one of {', '.join(ENSEMBLE_MEANS)}, got {mean!r}")
        self.members, self.mean = list(members), mean
        self.sizes: List[tuple] = []  # (constants, state parts) of each member, fixed when tracing start()

    def start(self, image_features):
        constants, state, self.sizes = [], [], []
        for member in self.members:
            member_constants, member_state = member.start(image_features)
            constants += member_constants
            state += member_state
            self.sizes.append((len(member_constants), len(member_state)))
        return constants, state

    def probabilities(self, tokens, state, constants):
        total, new_state, c, s = 0.0, [], 0, 0
        for member, (constant_count, state_count) in zip(self.members, self.sizes):
            probabilities, member_state = member.probabilities(tokens, state[s:s + state_count],
                                                               constants[c:c + constant_count])
            # The floor keeps a word every member rounds to 0 at -69 instead of -inf, so no row is all -inf.
            total += probabilities if self.mean == "arithmetic" else tf.math.log(tf.maximum(probabilities, 1e-30))
            new_state += list(member_state)
            c, s = c + constant_count, s + state_count
        if self.mean == "arithmetic":
            return total / len(self.members), new_state
        return tf.nn.softmax(total / len(self.members), axis=-1), new_state


def steps_of(model):
    return AttentionSteps(model) if decoder_name(model) == "attention" else MergeSteps(model)


def decoder_name(model) -> str:
    """"attention" or "merge": which decoder a trained model is."""
    return "attention" if any(layer.name == "attention_lstm" for layer in model.layers) else "merge"
