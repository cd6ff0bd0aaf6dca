"""Batched greedy and beam-search decoding with a trained decoder (merge or attention).

Each step runs the LSTM cell once for a whole batch of images (times beams), carrying its state,
inside one compiled tf.function: no `model.predict` per word per image, no re-reading of the prefix.
The two decoders differ only in how one step turns a word and the state into next-word
probabilities (`MergeSteps`, `AttentionSteps`); the search around them is shared.
Rules shared by both: <pad> and <start> are never generated, <end> is not allowed as the first word
(so no caption is empty), and a caption that never ends is cut at `max_length` words and kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
import tensorflow as tf

from vocabulary import END_ID, PAD_ID, START_ID, Vocabulary


@dataclass
class Hypothesis:
    token_ids: List[int]  # words, then <end> unless the caption was cut at the maximum length
    log_probability: float
    score: float  # log_probability, divided by length ** length_penalty


class MergeSteps:
    """One step of the merge decoder: the LSTM reads the word; the projected image joins its output."""

    def __init__(self, model):
        self.cell = model.get_layer("caption_lstm").cell
        self.image_projection = model.get_layer("image_projection")
        self.merged_projection = model.get_layer("merged_projection")
        self.next_word = model.get_layer("next_word")

    def start(self, image_features):
        """(per-image constants, initial LSTM state) for a batch of images."""
        zeros = tf.zeros([tf.shape(image_features)[0], self.cell.units])
        return [self.image_projection(image_features)], [zeros, zeros]

    def probabilities(self, word, state, constants):
        output, state = self.cell(word, state)
        return self.next_word(self.merged_projection(output + constants[0])), state


class AttentionSteps:
    """One step of the attention decoder: attend over the regions, read the word and the context."""

    def __init__(self, model):
        self.region_projection = model.get_layer("region_projection")
        self.attention = model.get_layer("attention_lstm")
        self.output_projection = model.get_layer("output_projection")
        self.context_projection = model.get_layer("context_projection")
        self.next_word = model.get_layer("next_word")

    def start(self, image_features):
        regions = self.region_projection(image_features)
        keys, state = self.attention.start(regions)
        return [regions, keys], state

    def probabilities(self, word, state, constants):
        output, state, context, _ = self.attention.step(word, state, constants[0], constants[1])
        hidden = tf.tanh(word + self.output_projection(output) + self.context_projection(context))
        return self.next_word(hidden), state


def decoder_name(model) -> str:
    """"attention" or "merge": which decoder a trained model is."""
    return "attention" if any(layer.name == "attention_lstm" for layer in model.layers) else "merge"


class CaptionDecoder:
    def __init__(self, model, max_length: int):
        self.max_length = max_length
        self.embedding = model.get_layer("word_embedding")
        self.steps = AttentionSteps(model) if decoder_name(model) == "attention" else MergeSteps(model)
        self.vocabulary_size = model.get_layer("next_word").units
        banned = np.zeros((2, self.vocabulary_size), np.float32)
        banned[:, [PAD_ID, START_ID]] = -np.inf
        banned[0, END_ID] = -np.inf  # row 0: the first word
        self.banned = tf.constant(banned)
        self._greedy = tf.function(self._greedy_batch, reduce_retracing=True)
        self._beam = tf.function(self._beam_batch, reduce_retracing=True)

    def _log_probabilities(self, tokens, state, constants, step):
        # The embedding table is read directly: the layer would attach a padding mask the cell cannot use.
        probabilities, state = self.steps.probabilities(tf.gather(self.embedding.embeddings, tokens), state, constants)
        return tf.math.log(probabilities) + self.banned[tf.minimum(step, 1)], state

    def _greedy_batch(self, image_features):
        batch = tf.shape(image_features)[0]
        constants, state = self.steps.start(image_features)
        token = tf.fill([batch], START_ID)
        finished = tf.zeros([batch], tf.bool)
        tokens = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
        for step in tf.range(self.max_length + 1):
            log_probabilities, state = self._log_probabilities(token, state, constants, step)
            token = tf.argmax(log_probabilities, axis=-1, output_type=tf.int32)
            token = tf.where(finished, PAD_ID, token)
            tokens = tokens.write(step, token)
            finished = finished | tf.equal(token, END_ID)
            if tf.reduce_all(finished):
                break
        return tf.transpose(tokens.stack())

    def _beam_batch(self, image_features, beam_size: int):
        batch, beams, words = tf.shape(image_features)[0], beam_size, self.vocabulary_size
        steps = self.max_length + 1
        constants, state = self.steps.start(image_features)
        constants = [tf.repeat(constant, beams, axis=0) for constant in constants]
        state = [tf.repeat(part, beams, axis=0) for part in state]
        # Only the first beam is alive at the start, so the beams do not all repeat one caption.
        scores = tf.tile(tf.constant([[0.0] + [-np.inf] * (beam_size - 1)]), [batch, 1])
        finished = tf.zeros([batch, beams], tf.bool)
        sequences = tf.zeros([batch, beams, steps], tf.int32)
        lengths = tf.zeros([batch, beams], tf.int32)
        token = tf.fill([batch, beams], START_ID)
        # A finished beam may only be extended by <pad>, at no cost.
        pad_only = tf.where(tf.range(words) == PAD_ID, 0.0, -np.inf)
        for step in tf.range(steps):
            log_probabilities, state = self._log_probabilities(tf.reshape(token, [-1]), state, constants, step)
            log_probabilities = tf.reshape(log_probabilities, [batch, beams, words])
            log_probabilities = tf.where(finished[:, :, None], pad_only, log_probabilities)
            candidates = tf.reshape(scores[:, :, None] + log_probabilities, [batch, beams * words])
            scores, best = tf.math.top_k(candidates, k=beams)
            parent, token = best // words, best % words
            state = [tf.reshape(tf.gather(tf.reshape(part, [batch, beams, -1]), parent, batch_dims=1), tf.shape(part))
                     for part in state]
            was_finished = tf.gather(finished, parent, batch_dims=1)
            lengths = tf.gather(lengths, parent, batch_dims=1) + tf.cast(~was_finished, tf.int32)
            sequences = tf.gather(sequences, parent, batch_dims=1)
            sequences += token[:, :, None] * tf.one_hot(step, steps, dtype=tf.int32)
            finished = was_finished | tf.equal(token, END_ID)
            if tf.reduce_all(finished):
                break
        return sequences, scores, lengths

    def greedy(self, image_features: np.ndarray, batch_size: int = 256) -> List[np.ndarray]:
        """Token ids of the greedy caption of each image (words, <end>, then <pad>)."""
        rows = []
        for start in range(0, len(image_features), batch_size):
            chunk = tf.convert_to_tensor(np.asarray(image_features[start:start + batch_size], np.float32))
            rows.extend(self._greedy(chunk).numpy())
        return rows

    def beam_search(self, image_features: np.ndarray, beam_size: int, length_penalty: float = 0.0,
                    batch_size: int = 64) -> List[List[Hypothesis]]:
        """For each image, its beams best first (those that found no finite path left out)."""
        if beam_size < 1:
            raise ValueError(f"--beam_size must be at least 1, got {beam_size}")
        # More beams than words that can follow <start> would only add impossible beams.
        beam_size = min(beam_size, self.vocabulary_size - 3)
        results = []
        for start in range(0, len(image_features), batch_size):
            chunk = tf.convert_to_tensor(np.asarray(image_features[start:start + batch_size], np.float32))
            sequences, scores, lengths = (t.numpy() for t in self._beam(chunk, beam_size))
            for image_sequences, image_scores, image_lengths in zip(sequences, scores, lengths):
                hypotheses = [Hypothesis([int(t) for t in seq[:length]], float(score),
                                         float(score) / max(int(length), 1) ** length_penalty)
                              for seq, score, length in zip(image_sequences, image_scores, image_lengths)
                              if np.isfinite(score)]
                results.append(sorted(hypotheses, key=lambda h: -h.score))
        return results

    def captions(self, image_features: np.ndarray, vocabulary: Vocabulary, beam_size: int = 1,
                 length_penalty: float = 0.0, batch_size: int = 256) -> List[str]:
        """The best caption of each image: greedy for beam_size 1, else beam search."""
        if beam_size == 1:
            return [vocabulary.decode(ids) for ids in self.greedy(image_features, batch_size)]
        best = [beams[0] for beams in self.beam_search(image_features, beam_size, length_penalty,
                                                       max(1, batch_size // beam_size))]
        return [vocabulary.decode(h.token_ids) for h in best]
