"""Constrained beam search (Anderson, Fernando, Johnson and Gould 2017): captions that must contain one
word of each of up to two word sets, such as {cat, cats} for an image the classifier calls a cat.

The search keeps a beam for each set of constraints met so far (none, the first, the second, both: four
states). Extending a caption with a word moves it to the state that adds the constraints the word
meets, and each state keeps its `beam_size` best captions, so a caption that has not yet said "cat"
competes only with others that have not either, and the word is placed where the decoder finds it
likeliest. The caption returned is the best one that meets the most constraints. An image with no
constraint starts in the last state, where the search is plain beam search.

It runs batched and compiled like CaptionDecoder's searches, on the same step and the same rules
(`CaptionDecoder._log_probabilities`), and exported models run it in their graph.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import tensorflow as tf

from decoders.decoding import CaptionDecoder
from inputs.vocabulary import END_ID, PAD_ID, START_ID

STATES = 4  # subsets of two constraints: bit 0, the first is met; bit 1, the second


def popcount(states: tf.Tensor) -> tf.Tensor:
    return tf.bitwise.bitwise_and(states, 1) + tf.bitwise.right_shift(states, 1)


class GuidedSearch:
    """Constrained beam search over one CaptionDecoder (one model or an ensemble)."""

    def __init__(self, decoder: CaptionDecoder):
        self.decoder = decoder
        self._search = tf.function(self._search_batch, reduce_retracing=True)

    def _search_batch(self, image_features, satisfies, beam_size: int):
        """(sequences (images, states, beams, steps), scores, lengths (images, states, beams)).
        `satisfies`: (images, 2, vocabulary) booleans, the words that meet each constraint (none: absent)."""
        decoder = self.decoder
        batch, beams, words, steps = tf.shape(image_features)[0], beam_size, decoder.vocabulary_size, \
            decoder.max_length + 1
        rows = STATES * beams
        constants, state = decoder.steps.start(image_features)
        constants = [tf.repeat(constant, rows, axis=0) for constant in constants]
        state = [tf.repeat(part, rows, axis=0) for part in state]
        absent = tf.cast(~tf.reduce_any(satisfies, axis=-1), tf.int32)  # an absent constraint counts as met
        start = absent[:, 0] + 2 * absent[:, 1]
        word_bits = tf.cast(satisfies[:, 0], tf.int32) + 2 * tf.cast(satisfies[:, 1], tf.int32)  # (images, words)
        state_index = tf.range(STATES)[None, :, None, None]
        targets = tf.bitwise.bitwise_or(state_index, word_bits[:, None, None, :])  # (images, states, 1, words)
        # Only the first beam of the start state is alive at the start.
        alive = (tf.range(STATES)[None, :, None] == start[:, None, None]) & (tf.range(beams)[None, None, :] == 0)
        scores = tf.where(alive, 0.0, -np.inf)
        finished = tf.zeros([batch, STATES, beams], tf.bool)
        sequences = tf.zeros([batch, STATES, beams, steps], tf.int32)
        lengths = tf.zeros([batch, STATES, beams], tf.int32)
        token = tf.fill([batch, STATES, beams], START_ID)
        pad_only = tf.where(tf.range(words) == PAD_ID, 0.0, -np.inf)  # a finished caption only takes <pad>
        for step in tf.range(steps):
            log_probabilities, state = decoder._log_probabilities(
                tf.reshape(token, [-1]), tf.reshape(sequences, [-1, steps]), state, constants, step)
            log_probabilities = tf.reshape(log_probabilities, [-1, STATES, beams, words])
            log_probabilities = tf.where(finished[..., None], pad_only, log_probabilities)
            candidates = scores[..., None] + log_probabilities
            best_scores, best = [], []
            for target in range(STATES):
                in_target = tf.reshape(tf.where(tf.equal(targets, target), candidates, -np.inf), [-1, rows * words])
                values, indices = tf.math.top_k(in_target, k=beams)
                best_scores.append(values)
                best.append(indices)
            scores, best = tf.stack(best_scores, axis=1), tf.stack(best, axis=1)
            parent, token = tf.reshape(best // words, [-1, rows]), best % words
            state = [tf.reshape(tf.gather(tf.reshape(part, [-1, rows, part.shape[-1]]), parent, batch_dims=1), tf.shape(part))
                     for part in state]
            was_finished = tf.reshape(tf.gather(tf.reshape(finished, [-1, rows]), parent, batch_dims=1),
                                      [-1, STATES, beams])
            lengths = tf.reshape(tf.gather(tf.reshape(lengths, [-1, rows]), parent, batch_dims=1),
                                 [-1, STATES, beams]) + tf.cast(~was_finished, tf.int32)
            sequences = tf.reshape(tf.gather(tf.reshape(sequences, [-1, rows, steps]), parent, batch_dims=1),
                                   [-1, STATES, beams, steps])
            sequences += token[..., None] * tf.one_hot(step, steps, dtype=tf.int32)
            finished = was_finished | tf.equal(token, END_ID)
            if tf.reduce_all(finished | tf.math.is_inf(scores)):
                break
        return sequences, scores, lengths

    def best_in_graph(self, image_features, satisfies, beam_size: int, length_penalty: float = 0.0):
        """The best caption of each image among those meeting the most of its constraints: (token ids
        (images, steps), log-probability, constraints met). TensorFlow operations only (exported models
        call it while tracing)."""
        beam_size = min(beam_size, self.decoder.vocabulary_size - 3)
        sequences, scores, lengths = self._search(image_features, satisfies, beam_size)
        batch = tf.shape(sequences)[0]
        present = tf.cast(tf.reduce_any(satisfies, axis=-1), tf.int32)
        required = present[:, 0] + 2 * present[:, 1]
        met = popcount(tf.bitwise.bitwise_and(tf.range(STATES)[None, :], required[:, None]))  # (images, states)
        ranks = scores / tf.maximum(tf.cast(lengths, tf.float32), 1.0) ** length_penalty
        # Most constraints met first, then the rank (log-probabilities are far above -1e4).
        preference = tf.where(tf.math.is_finite(ranks), tf.cast(met[:, :, None], tf.float32) * 1e4 + ranks, -np.inf)
        best = tf.argmax(tf.reshape(preference, [batch, -1]), axis=1, output_type=tf.int32)
        steps = tf.shape(sequences)[-1]
        pick = lambda tensor, shape: tf.gather(tf.reshape(tensor, shape), best, batch_dims=1)  # noqa: E731
        return (pick(sequences, [batch, -1, steps]), pick(scores, [batch, -1]),
                tf.gather(met, best // beam_size, batch_dims=1))

    def best(self, image_features: np.ndarray, satisfies: np.ndarray, beam_size: int, length_penalty: float = 0.0,
             batch_size: int = 32) -> List[Tuple[List[int], float, int]]:
        """For each image: (token ids up to and with <end>, log-probability, constraints met)."""
        results = []
        for start in range(0, len(image_features), batch_size):
            chunk = tf.convert_to_tensor(np.asarray(image_features[start:start + batch_size], np.float32))
            tokens, scores, met = (tensor.numpy() for tensor in self.best_in_graph(
                chunk, tf.constant(satisfies[start:start + batch_size]), beam_size, length_penalty))
            for row, score, count in zip(tokens, scores, met):
                ends = np.flatnonzero(row == END_ID)
                results.append(([int(t) for t in row[:ends[0] + 1 if len(ends) else len(row)]], float(score), int(count)))
        return results
