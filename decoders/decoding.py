"""Batched greedy decoding, beam search and sampling with one trained decoder or an ensemble.

Each step runs the LSTM cell once for a whole batch of images (times beams or samples), carrying its
state, inside one compiled tf.function: no `model.predict` per word per image, no re-reading of the
prefix. The decoders differ only in how one step turns a word and the state into next-word
probabilities (steps.py); the searches around them are shared.
Rules shared by every search: <pad>, <start> and <unk> are never generated, <end> is not allowed as
the first word (so no caption is empty), and a caption that never ends is cut at `max_length` words
and kept. Optional rules: `banned_endings` (no <end> right after these word ids: "a man in a") and
`no_repeat_ngram_size` N (no n-gram of N words twice in one caption).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import tensorflow as tf

from decoders.steps import EnsembleSteps, steps_of
from inputs.vocabulary import BAD_ENDINGS, END_ID, PAD_ID, START_ID, UNK_ID, Vocabulary


@dataclass
class Hypothesis:
    token_ids: List[int]  # words, then <end> unless the caption was cut at the maximum length
    log_probability: float
    score: float  # log_probability, divided by length ** length_penalty


def bad_ending_ids(vocabulary: Vocabulary) -> List[int]:
    """Ids of the words after which --block_bad_endings forbids <end>."""
    return [vocabulary.ids[word] for word in BAD_ENDINGS if word in vocabulary.ids]


class CaptionDecoder:
    """Greedy, beam and sampled captions from one model, or from an ensemble (a list of models)."""

    def __init__(self, model, max_length: int, no_repeat_ngram_size: int = 0, banned_endings: Sequence[int] = (),
                 ensemble_mean: str = "geometric"):
        models = list(model) if isinstance(model, (list, tuple)) else [model]
        if no_repeat_ngram_size < 0:
            raise ValueError(f"--no_repeat_ngram_size must be 0 (off) or more, got {no_repeat_ngram_size}")
        self.max_length, self.no_repeat = max_length, no_repeat_ngram_size
        self.steps = (steps_of(models[0]) if len(models) == 1 else
                      EnsembleSteps([steps_of(m) for m in models], ensemble_mean))
        self.vocabulary_size = models[0].get_layer("next_word").units
        banned = np.zeros((2, self.vocabulary_size), np.float32)
        banned[:, [PAD_ID, START_ID, UNK_ID]] = -np.inf
        banned[0, END_ID] = -np.inf  # row 0: the first word
        self.banned = tf.constant(banned)
        # (2, vocabulary): the words that may be written first, and later.
        self.writable = np.isfinite(banned)
        self.blocks_endings = bool(len(banned_endings))  # else the rule costs nothing per step
        end_after = np.zeros(self.vocabulary_size, bool)
        end_after[list(banned_endings)] = True
        self.end_banned_after = tf.constant(end_after)
        self.end_is_word = tf.constant(np.arange(self.vocabulary_size) == END_ID)
        self._greedy = tf.function(self._greedy_batch, reduce_retracing=True)
        self._beam = tf.function(self._beam_batch, reduce_retracing=True)
        self._sample = tf.function(self._sample_batch, reduce_retracing=True)
        self._forced = tf.function(self._forced_batch, reduce_retracing=True)
        self._score = tf.function(self._score_batch, reduce_retracing=True)

    def _ending_banned(self, tokens):
        """(rows, vocabulary): True at <end> for the rows whose last word forbids ending (--block_bad_endings)."""
        return tf.gather(self.end_banned_after, tokens)[:, None] & self.end_is_word[None, :]

    def policy_words(self, previous, first_word):
        """(rows, vocabulary): True for each word `sample` may draw after the word `previous` of each row
        (`first_word`: True where it is <start>). `sample` draws from the model's probabilities
        renormalised over these words, so self-critical training's policy gradient (training/scst.py)
        renormalises over them too; `no_repeat_ngram_size`, which needs the whole caption, is left out."""
        writable = tf.gather(tf.constant(self.writable), tf.where(first_word, 0, 1))
        return writable & ~self._ending_banned(previous) if self.blocks_endings else writable

    def _log_probabilities(self, tokens, history, state, constants, step):
        """Next-word log-probabilities of each row, the rules applied; `history` holds the words so far."""
        probabilities, state = self.steps.probabilities(tokens, state, constants)
        log_probabilities = tf.math.log(probabilities) + self.banned[tf.minimum(step, 1)]
        # Renormalised over the words that may be written: the model's distribution given that it
        # writes no <unk>, <pad> or <start>. Beam search compares captions by these sums, so the mass a
        # model puts on <unk> (which varies by context) must not make one caption look likelier.
        log_probabilities -= tf.reduce_logsumexp(log_probabilities, axis=-1, keepdims=True)
        if self.blocks_endings:
            log_probabilities = tf.where(self._ending_banned(tokens), -np.inf, log_probabilities)
        if self.no_repeat:
            log_probabilities = tf.where(self._repeats(history, step), -np.inf, log_probabilities)
        return log_probabilities, state

    def _repeats(self, history, step):
        """(rows, vocabulary): True for each word that would complete an n-gram the row already holds."""
        n, rows = self.no_repeat, tf.shape(history)[0]
        starts = history.shape[1] - n + 1  # where an earlier n-gram can start
        if starts <= 0:
            return tf.zeros([rows, self.vocabulary_size], tf.bool)
        # An earlier n-gram starting at i matches when its first n - 1 words equal the last n - 1 written.
        match = tf.broadcast_to(tf.range(starts)[None, :] <= step - n, [rows, starts])
        for offset in range(n - 1):
            last = tf.gather(history, tf.maximum(step - n + 1 + offset, 0), axis=1)
            match &= tf.equal(history[:, offset:offset + starts], last[:, None])
        followers = history[:, n - 1:n - 1 + starts]
        row_index = tf.broadcast_to(tf.range(rows)[:, None], [rows, starts])
        indices = tf.boolean_mask(tf.stack([row_index, followers], axis=-1), match)
        hits = tf.scatter_nd(indices, tf.ones(tf.shape(indices)[:1]), [rows, self.vocabulary_size])
        return hits > 0

    def _greedy_batch(self, image_features):
        return self._one_path(image_features, 1, sample=False)

    def _sample_batch(self, image_features, samples: int, seed):
        return self._one_path(image_features, samples, sample=True, seed=seed)

    def _one_path(self, image_features, copies: int, sample: bool, seed=None):
        """Greedy (the likeliest word) or sampled (a word drawn from the distribution) captions;
        `copies` rows per image, image i's rows together. Sampling is stateless: step t draws with
        `seed` folded with t, so the same seed gives the same captions whatever ran before."""
        constants, state = self.steps.start(image_features)
        if copies > 1:
            constants = [tf.repeat(constant, copies, axis=0) for constant in constants]
            state = [tf.repeat(part, copies, axis=0) for part in state]
        rows, steps = tf.shape(image_features)[0] * copies, self.max_length + 1
        token = tf.fill([rows], START_ID)
        finished = tf.zeros([rows], tf.bool)
        history = tf.zeros([rows, steps], tf.int32)
        for step in tf.range(steps):
            log_probabilities, state = self._log_probabilities(token, history, state, constants, step)
            if sample:
                step_seed = tf.random.experimental.stateless_fold_in(seed, step)
                token = tf.random.stateless_categorical(log_probabilities, 1, step_seed, dtype=tf.int32)[:, 0]
            else:
                token = tf.argmax(log_probabilities, axis=-1, output_type=tf.int32)
            token = tf.where(finished, PAD_ID, token)
            history += token[:, None] * tf.one_hot(step, steps, dtype=tf.int32)[None, :]
            finished = finished | tf.equal(token, END_ID)
            if tf.reduce_all(finished):
                break
        return history

    def _forced_batch(self, image_features, token_ids):
        """Teacher-forced: each step reads the given word instead of choosing one; returns the log-probability
        of each given word under the distribution `sample` draws from there (0 at padding)."""
        constants, state = self.steps.start(image_features)
        rows, width, steps = tf.shape(token_ids)[0], tf.shape(token_ids)[1], self.max_length + 1
        token = tf.fill([rows], START_ID)
        history = tf.zeros([rows, steps], tf.int32)
        chosen = tf.TensorArray(tf.float32, size=width)
        for step in tf.range(width):
            log_probabilities, state = self._log_probabilities(token, history, state, constants, step)
            # What tf.random.stateless_categorical draws from: the rules' distribution, renormalised.
            log_probabilities -= tf.reduce_logsumexp(log_probabilities, axis=-1, keepdims=True)
            token = token_ids[:, step]
            chosen = chosen.write(step, tf.where(tf.equal(token, PAD_ID), 0.0,
                                                 tf.gather(log_probabilities, token, batch_dims=1)))
            history += token[:, None] * tf.one_hot(step, steps, dtype=tf.int32)[None, :]
        return tf.transpose(chosen.stack())

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
            log_probabilities, state = self._log_probabilities(tf.reshape(token, [-1]), tf.reshape(sequences, [-1, steps]),
                                                               state, constants, step)
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

    def _score_batch(self, image_features, token_ids):
        """Log-probability of given captions under the same rules as the searches, and their lengths in
        tokens (words and <end>). `token_ids`: (images, max_length + 1), words, <end>, then <pad>."""
        constants, state = self.steps.start(image_features)
        rows, steps = tf.shape(token_ids)[0], self.max_length + 1
        positions = tf.range(steps)[None, :]
        token, total = tf.fill([rows], START_ID), tf.zeros([rows])
        finished, lengths = tf.zeros([rows], tf.bool), tf.zeros([rows], tf.int32)
        for step in tf.range(steps):
            history = tf.where(positions < step, token_ids, 0)  # what a search had written before this step
            log_probabilities, state = self._log_probabilities(token, history, state, constants, step)
            token = token_ids[:, step]
            finished |= tf.equal(token, PAD_ID)
            total += tf.where(finished, 0.0, tf.gather(log_probabilities, token, batch_dims=1))
            lengths += tf.cast(~finished, tf.int32)
            finished |= tf.equal(token, END_ID)
            if tf.reduce_all(finished):
                break
        return total, lengths

    def score_in_graph(self, image_features, token_ids):
        """(log-probability, length in tokens with <end>) of each image's caption `token_ids` (any width:
        cut or padded to the longest caption); TensorFlow operations only."""
        width = self.max_length + 1
        token_ids = tf.convert_to_tensor(token_ids, tf.int32)[:, :width]
        token_ids = tf.pad(token_ids, [[0, 0], [0, width - tf.shape(token_ids)[1]]])
        token_ids = tf.ensure_shape(token_ids, [None, width])
        return self._score(tf.convert_to_tensor(image_features, tf.float32), token_ids)

    def best_in_graph(self, image_features, beam_size: int, length_penalty: float = 0.0):
        """The best caption of each image as (token ids (batch, max_length + 1), log-probability), built
        from TensorFlow operations only (exported models call it while tracing); beam_size 1 is greedy."""
        beam_size = min(beam_size, self.vocabulary_size - 3)
        sequences, scores, lengths = self._beam(image_features, beam_size)  # the tf.function: AutoGraph's loops
        ranks = scores / tf.maximum(tf.cast(lengths, tf.float32), 1.0) ** length_penalty
        best = tf.argmax(ranks, axis=1, output_type=tf.int32)  # the first of equals, as beam_search sorts
        return tf.gather(sequences, best, batch_dims=1), tf.gather(scores, best, batch_dims=1)

    def greedy(self, image_features: np.ndarray, batch_size: int = 256) -> List[np.ndarray]:
        """Token ids of the greedy caption of each image (words, <end>, then <pad>)."""
        rows = []
        for start in range(0, len(image_features), batch_size):
            chunk = tf.convert_to_tensor(np.asarray(image_features[start:start + batch_size], np.float32))
            rows.extend(self._greedy(chunk).numpy())
        return rows

    def sample(self, image_features: np.ndarray, samples: int, seed: Sequence[int]) -> np.ndarray:
        """`samples` captions per image drawn from the model's word distribution, as token ids
        (rows image by image: words, <end>, then <pad>). `seed`, two integers, fixes the draws: the
        same seed, model and images give the same captions (TensorFlow's global generator is not used)."""
        features = tf.convert_to_tensor(np.asarray(image_features, np.float32))
        return self._sample(features, samples, tf.constant(seed, tf.int32)).numpy()

    def sampled_log_probabilities(self, image_features: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
        """(rows, words): the log-probability with which `sample` draws each word of `token_ids` (one row
        per row of `image_features`: words, <end>, then <pad>, as `sample` returns them) after the words
        before it; 0 at padding."""
        return self._forced(tf.convert_to_tensor(np.asarray(image_features, np.float32)),
                            tf.convert_to_tensor(np.asarray(token_ids, np.int32))).numpy()

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

    def best_token_ids(self, image_features: np.ndarray, beam_size: int = 1, length_penalty: float = 0.0,
                       batch_size: int = 256) -> List[np.ndarray]:
        """The token ids of each image's best caption (words, then <end> unless cut, then <pad> in greedy
        rows): greedy for beam_size 1, else beam search."""
        if beam_size == 1:
            return self.greedy(image_features, batch_size)
        best = [beams[0] for beams in self.beam_search(image_features, beam_size, length_penalty,
                                                       max(1, batch_size // beam_size))]
        return [np.asarray(h.token_ids, np.int32) for h in best]

    def captions(self, image_features: np.ndarray, vocabulary: Vocabulary, beam_size: int = 1,
                 length_penalty: float = 0.0, batch_size: int = 256) -> List[str]:
        """The best caption of each image: greedy for beam_size 1, else beam search."""
        return [vocabulary.decode(ids) for ids in self.best_token_ids(image_features, beam_size, length_penalty,
                                                                      batch_size)]
