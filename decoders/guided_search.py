"""Constrained beam search (Anderson, Fernando, Johnson and Gould 2017): captions that must name up to
three things, each a set of words such as {cat, cats} and optionally one two-word phrase ("hot dog(s)").

The search keeps a beam for each set of constraints met so far (2 ** constraints states). Extending a
caption with a word moves it to the state that adds the constraints the word meets (a phrase's second
word meets its constraint only right after its first), and each state keeps its `beam_size` best
captions, so a caption that has not yet said "cat" competes only with others that have not either,
and the word is placed where the decoder finds it likeliest. An image with no constraint starts in the
last state, where the search is plain beam search.

The caption returned is the best-ranked one that meets at least `required` of its constraints and
contains every word of `keep` (the nocaps baselines' "k-1 of k", and the words of the plain caption
that guidance must not lose). It runs batched and compiled like CaptionDecoder's searches, on the same
step and the same rules (`CaptionDecoder._log_probabilities`), and exported models run it in their graph.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from decoders.decoding import CaptionDecoder
from inputs.vocabulary import END_ID, PAD_ID, START_ID

MAX_CONSTRAINTS = 3


class Constraints(NamedTuple):
    """What each image's caption must name: (images, constraints, vocabulary) words that meet each
    constraint; (images, constraints) the first word of its phrase (-1: none); (images, constraints,
    vocabulary) the words that complete that phrase. A constraint with no word and no phrase is absent."""
    words: tf.Tensor
    phrase_first: tf.Tensor
    phrase_second: tf.Tensor

    def present(self) -> tf.Tensor:
        """(images, constraints) booleans: the constraints each image has."""
        return tf.reduce_any(self.words, axis=-1) | (self.phrase_first >= 0)


def bit_sum(flags: tf.Tensor, axis: int) -> tf.Tensor:
    """Booleans along `axis` (constraint k) -> integers with bit k set where flag k is."""
    count = flags.shape[axis]
    weights = tf.reshape(2 ** tf.range(count), [-1 if index == axis % flags.shape.rank else 1
                                                for index in range(flags.shape.rank)])
    return tf.reduce_sum(tf.cast(flags, tf.int32) * weights, axis=axis)


def met_counts(states: tf.Tensor, constraints: int) -> tf.Tensor:
    """How many bits of each state are set."""
    return sum(tf.bitwise.bitwise_and(tf.bitwise.right_shift(states, bit), 1) for bit in range(constraints))


class GuidedSearch:
    """Constrained beam search over one CaptionDecoder (one model or an ensemble)."""

    def __init__(self, decoder: CaptionDecoder):
        self.decoder = decoder
        self._search = tf.function(self._search_batch, reduce_retracing=True)

    def _search_batch(self, image_features, words, phrase_first, phrase_second, beam_size: int, constraints: int):
        """(sequences (images, states, beams, steps), scores, lengths (images, states, beams)). `constraints`
        is a Python number, so each count gets its own trace (reduce_retracing would leave it unknown)."""
        decoder, states = self.decoder, 2 ** constraints
        words = tf.ensure_shape(words, [None, constraints, None])
        phrase_first = tf.ensure_shape(phrase_first, [None, constraints])
        phrase_second = tf.ensure_shape(phrase_second, [None, constraints, None])
        batch, beams, vocabulary, steps = tf.shape(image_features)[0], beam_size, decoder.vocabulary_size, \
            decoder.max_length + 1
        rows = states * beams
        constants, state = decoder.steps.start(image_features)
        constants = [tf.repeat(constant, rows, axis=0) for constant in constants]
        state = [tf.repeat(part, rows, axis=0) for part in state]
        present = Constraints(words, phrase_first, phrase_second).present()
        start = bit_sum(~present, axis=1)  # an absent constraint counts as met
        word_bits = bit_sum(words, axis=1)[:, None, None, :]  # (images, 1, 1, vocabulary)
        state_index = tf.range(states)[None, :, None, None]
        alive = (tf.range(states)[None, :, None] == start[:, None, None]) & (tf.range(beams)[None, None, :] == 0)
        scores = tf.where(alive, 0.0, -np.inf)
        finished = tf.zeros([batch, states, beams], tf.bool)
        sequences = tf.zeros([batch, states, beams, steps], tf.int32)
        lengths = tf.zeros([batch, states, beams], tf.int32)
        token = tf.fill([batch, states, beams], START_ID)
        pad_only = tf.where(tf.range(vocabulary) == PAD_ID, 0.0, -np.inf)  # a finished caption only takes <pad>
        for step in tf.range(steps):
            log_probabilities, state = decoder._log_probabilities(
                tf.reshape(token, [-1]), tf.reshape(sequences, [-1, steps]), state, constants, step)
            log_probabilities = tf.reshape(log_probabilities, [-1, states, beams, vocabulary])
            log_probabilities = tf.where(finished[..., None], pad_only, log_probabilities)
            candidates = scores[..., None] + log_probabilities
            # A phrase's second word meets its constraint where the caption's last word is the phrase's first.
            after_first = tf.equal(token[..., None], phrase_first[:, None, None, :])  # (images, states, beams, c)
            phrase_bits = bit_sum(after_first[..., None] & phrase_second[:, None, None, :, :], axis=3)
            targets = tf.bitwise.bitwise_or(state_index, word_bits | phrase_bits)
            best_scores, best = [], []
            for target in range(states):
                in_target = tf.reshape(tf.where(tf.equal(targets, target), candidates, -np.inf),
                                       [-1, rows * vocabulary])
                values, indices = tf.math.top_k(in_target, k=beams)
                best_scores.append(values)
                best.append(indices)
            scores, best = tf.stack(best_scores, axis=1), tf.stack(best, axis=1)
            parent, token = tf.reshape(best // vocabulary, [-1, rows]), best % vocabulary
            state = [tf.reshape(tf.gather(tf.reshape(part, [-1, rows, part.shape[-1]]), parent, batch_dims=1),
                                tf.shape(part)) for part in state]
            was_finished = tf.reshape(tf.gather(tf.reshape(finished, [-1, rows]), parent, batch_dims=1),
                                      [-1, states, beams])
            lengths = tf.reshape(tf.gather(tf.reshape(lengths, [-1, rows]), parent, batch_dims=1),
                                 [-1, states, beams]) + tf.cast(~was_finished, tf.int32)
            sequences = tf.reshape(tf.gather(tf.reshape(sequences, [-1, rows, steps]), parent, batch_dims=1),
                                   [-1, states, beams, steps])
            sequences += token[..., None] * tf.one_hot(step, steps, dtype=tf.int32)
            finished = was_finished | tf.equal(token, END_ID)
            if tf.reduce_all(finished | tf.math.is_inf(scores)):
                break
        return sequences, scores, lengths

    def best_in_graph(self, image_features, constraints: Constraints, beam_size: int, required, keep,
                      length_penalty: float = 0.0, word_classes=None, must=None):
        """Each image's best caption among those meeting at least `required` (images,) of its constraints,
        among them those of the bit mask `must` (images,; bit c: constraint c; None: any), and containing
        every word of `keep` ((images, width) ids, -1 for none; with `word_classes`, a
        (vocabulary,) map, a caption contains a kept id where one of its words maps to it): (token ids
        (images, steps), log-probability, length in tokens with <end>, constraints met, found). Where no
        caption qualifies, found is False. TensorFlow operations only (exported models call it while tracing)."""
        beam_size = min(beam_size, self.decoder.vocabulary_size - 3)
        count = constraints.words.shape[1]
        sequences, scores, lengths = self._search(image_features, constraints.words, constraints.phrase_first,
                                                  constraints.phrase_second, beam_size, count)
        batch, steps = tf.shape(sequences)[0], tf.shape(sequences)[-1]
        required_bits = bit_sum(constraints.present(), axis=1)
        met = met_counts(tf.bitwise.bitwise_and(tf.range(2 ** count)[None, :], required_bits[:, None]), count)
        flat = tf.reshape(sequences, [batch, -1, steps])  # (images, states * beams, steps)
        written = flat if word_classes is None else tf.gather(word_classes, flat)
        has = tf.reduce_any(tf.equal(written[:, :, :, None], keep[:, None, None, :]), axis=2)  # (images, rows, width)
        keeps_all = tf.reduce_all(has | (keep[:, None, :] < 0), axis=2)
        met_rows = tf.repeat(met, beam_size, axis=1)
        ranks = tf.reshape(scores / tf.maximum(tf.cast(lengths, tf.float32), 1.0) ** length_penalty, [batch, -1])
        valid = tf.math.is_finite(ranks) & keeps_all & (met_rows >= required[:, None])
        if must is not None:  # a row's state is the set of constraints it met
            state_rows = tf.repeat(tf.range(2 ** count), beam_size)[None, :]
            valid &= tf.equal(tf.bitwise.bitwise_and(state_rows, must[:, None]), must[:, None])
        best = tf.argmax(tf.where(valid, ranks, -np.inf), axis=1, output_type=tf.int32)
        pick = lambda tensor: tf.gather(tensor, best, batch_dims=1)  # noqa: E731
        return (pick(flat), pick(tf.reshape(scores, [batch, -1])), pick(tf.reshape(lengths, [batch, -1])),
                pick(met_rows), pick(valid))
