"""Constrained beam search (decoders/guided_search.py): against a plain per-image reference written from
the method's description (up to three constraints, a two-word phrase, k-1 of k, words to keep), with no
constraint like beam search, and its captions contain the words asked."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from decoders.decoding import CaptionDecoder
from decoders.guided_search import Constraints, GuidedSearch
from inputs.vocabulary import END_ID, PAD_ID, START_ID
from model import build_merge_model

VOCABULARY, FEATURES, LENGTH = 24, 10, 7


@pytest.fixture(scope="module")
def decoder():
    import keras

    keras.utils.set_random_seed(4)
    model = build_merge_model(tiny_config("", "", embedding_dim=8, units=8), VOCABULARY, FEATURES)
    return CaptionDecoder(model, max_length=LENGTH)


def word_bits(words, phrase_first, phrase_second, last, word):
    """The constraints `word` meets after `last`: by itself, or as the second word of a phrase."""
    return sum(1 << c for c in range(len(words)) if words[c, word] or (last == phrase_first[c] and phrase_second[c, word]))


def reference_search(decoder, image_features, words, phrase_first, phrase_second, beam_size, required, keep,
                     length_penalty=0.0):
    """One image, one beam at a time, in plain Python: a beam per set of constraints met; each word moves a
    caption to the set plus the constraints the word meets; each set keeps its best `beam_size` (ties: the
    earlier set, beam and word first, as top_k does); the answer is the best-ranked caption meeting at least
    `required` constraints and containing every word of `keep`. Returns (token ids, log-probability) or None."""
    count, steps = len(words), decoder.max_length + 1
    constants, start_state = decoder.steps.start(tf.constant(image_features[None], tf.float32))
    present = [bool(words[c].any()) or phrase_first[c] >= 0 for c in range(count)]
    start = sum(1 << c for c in range(count) if not present[c])
    beams = {state: [] for state in range(2 ** count)}
    beams[start] = [(0.0, [], False, start_state)]
    for step in range(steps):
        candidates = {state: [] for state in beams}
        for state in beams:
            for rank, (score, tokens, finished, lstm) in enumerate(beams[state]):
                if finished:
                    candidates[state].append((score, (state, rank, PAD_ID), tokens + [PAD_ID], True, lstm))
                    continue
                history = np.zeros((1, steps), np.int32)
                history[0, :len(tokens)] = tokens
                last = tokens[-1] if tokens else START_ID
                log_probabilities, new_lstm = decoder._log_probabilities(
                    tf.constant([last]), tf.constant(history), lstm, constants, tf.constant(step))
                for word, value in enumerate(log_probabilities.numpy()[0]):
                    if np.isfinite(value):
                        target = state | word_bits(words, phrase_first, phrase_second, last, word)
                        candidates[target].append((score + value, (state, rank, word), tokens + [word],
                                                   word == END_ID, new_lstm))
        for state in beams:
            chosen = sorted(candidates[state], key=lambda c: (-c[0], c[1]))[:beam_size]
            beams[state] = [(score, tokens, finished, lstm) for score, _, tokens, finished, lstm in chosen]
        if all(finished for state in beams.values() for _, _, finished, _ in state):
            break
    mask = sum(1 << c for c in range(count) if present[c])
    best = None
    for state in beams:
        for score, tokens, _, _ in beams[state]:
            words_written = [t for t in tokens if t != PAD_ID]
            if bin(state & mask).count("1") < required or not set(keep) <= set(words_written):
                continue
            rank = score / max(len(words_written), 1) ** length_penalty
            if best is None or rank > best[0]:
                best = (rank, words_written, score)
    return None if best is None else (best[1], best[2])


def random_constraints(rng, images, count, words_each, phrases=False):
    words = np.zeros((images, count, VOCABULARY), bool)
    first = np.full((images, count), -1, np.int32)
    second = np.zeros((images, count, VOCABULARY), bool)
    for image in range(images):
        for constraint in range(count):
            chosen = rng.choice(np.arange(4, VOCABULARY), size=words_each + 2, replace=False)
            if phrases and constraint == 0:
                first[image, 0], second[image, 0, chosen[1:3]] = chosen[0], True
            else:
                words[image, constraint, chosen[:words_each]] = True
    return words, first, second


def run(decoder, features, words, first, second, beam_size, required, keep, length_penalty=0.0, batch=3):
    search, results = GuidedSearch(decoder), []
    for start in range(0, len(features), batch):
        part = slice(start, start + batch)
        out = search.best_in_graph(tf.constant(features[part]), Constraints(
            tf.constant(words[part]), tf.constant(first[part]), tf.constant(second[part])), beam_size,
            tf.constant(required[part]), tf.constant(keep[part]), length_penalty)
        tokens, scores, _, met, found = (tensor.numpy() for tensor in out)
        for row, score, count, ok in zip(tokens, scores, met, found):
            ends = np.flatnonzero(row == END_ID)
            results.append((list(row[:ends[0] + 1 if len(ends) else len(row)]), float(score), int(count), bool(ok)))
    return results


@pytest.mark.parametrize("beam_size, count, required, phrases, length_penalty",
                         [(3, 1, 1, False, 0.0), (2, 2, 2, False, 0.0), (2, 3, 2, True, 1.0), (3, 2, 1, True, 0.0)])
def test_batched_search_equals_the_per_image_reference(decoder, beam_size, count, required, phrases, length_penalty):
    rng = np.random.default_rng(beam_size + count)
    features = rng.normal(scale=2.0, size=(5, FEATURES)).astype(np.float32)
    words, first, second = random_constraints(rng, 5, count, 2, phrases)
    words[4], first[4], second[4] = False, -1, False  # and one image with no constraint, in the same batch
    required_each = np.array([required] * 4 + [0], np.int32)
    keep = np.full((5, 2), -1, np.int32)
    batched = run(decoder, features, words, first, second, beam_size, required_each, keep, length_penalty)
    for image in range(5):
        expected = reference_search(decoder, features[image], words[image], first[image], second[image], beam_size,
                                    required_each[image], [], length_penalty)
        assert batched[image][3] == (expected is not None)
        if expected is not None:
            assert batched[image][0] == expected[0]
            np.testing.assert_allclose(batched[image][1], expected[1], rtol=1e-5, atol=1e-5)


def test_k_minus_1_of_k_and_the_words_to_keep(decoder):
    rng = np.random.default_rng(7)
    features = rng.normal(scale=2.0, size=(6, FEATURES)).astype(np.float32)
    words, first, second = random_constraints(rng, 6, 3, 1)  # one word each: the caption must say two of three
    plain = [beams[0].token_ids for beams in decoder.beam_search(features, 3)]
    keep = np.full((6, 1), -1, np.int32)
    keep[:, 0] = [row[0] for row in plain]  # the plain caption's first word must stay
    results = run(decoder, features, words, first, second, 4, np.full(6, 2, np.int32), keep)
    for image, (tokens, _, met, found) in enumerate(results):
        if not found:
            continue
        said = sum(bool(set(np.flatnonzero(words[image, c])) & set(tokens)) for c in range(3))
        assert met == said >= 2 and keep[image, 0] in tokens
        expected = reference_search(decoder, features[image], words[image], first[image], second[image], 4, 2,
                                    [keep[image, 0]])
        assert tokens == expected[0]
    assert sum(found for *_, found in results) >= 3


def test_a_constraint_of_the_must_mask_is_met_even_where_k_minus_1_of_k_would_do(decoder):
    rng = np.random.default_rng(7)
    features = rng.normal(scale=2.0, size=(6, FEATURES)).astype(np.float32)
    words, first, second = random_constraints(rng, 6, 3, 1)
    search, constraints = GuidedSearch(decoder), Constraints(tf.constant(words), tf.constant(first), tf.constant(second))
    no_keep = tf.fill([6, 1], -1)
    free = search.best_in_graph(tf.constant(features), constraints, 4, tf.fill([6], 2), no_keep)
    must = search.best_in_graph(tf.constant(features), constraints, 4, tf.fill([6], 2), no_keep, must=tf.fill([6], 1))
    def says_first(image: int, row) -> bool:
        return bool(set(np.flatnonzero(words[image, 0])) & set(row.numpy()))

    changed = 0
    for image in range(6):
        if must[4][image]:
            assert says_first(image, must[0][image]) and must[3][image] >= 2
        changed += bool(free[4][image]) and not says_first(image, free[0][image])
    assert changed >= 1 and must[4].numpy().any()  # the mask changed some caption, and some still qualify


def test_a_kept_word_is_kept_by_any_word_of_its_class(decoder):
    rng = np.random.default_rng(10)
    features = rng.normal(scale=2.0, size=(6, FEATURES)).astype(np.float32)
    words, first, second = random_constraints(rng, 6, 1, 2)
    classes = np.full(VOCABULARY, -1, np.int32)
    classes[[5, 6, 7]] = 5  # words 5, 6 and 7 are one class: any of them keeps "5"
    search = GuidedSearch(decoder)
    out = search.best_in_graph(tf.constant(features), Constraints(tf.constant(words), tf.constant(first),
                                                                  tf.constant(second)), 4, tf.ones(6, tf.int32),
                               tf.fill([6, 1], 5), 0.0, tf.constant(classes))
    tokens, found = out[0].numpy(), out[4].numpy()
    assert found.any()
    for row, ok in zip(tokens, found):
        assert not ok or set(row) & {5, 6, 7}


def test_without_constraints_it_is_beam_search(decoder):
    rng = np.random.default_rng(8)
    features = rng.normal(scale=2.0, size=(6, FEATURES)).astype(np.float32)
    words, first, second = np.zeros((6, 2, VOCABULARY), bool), np.full((6, 2), -1, np.int32), np.zeros((6, 2, VOCABULARY), bool)
    guided = run(decoder, features, words, first, second, 3, np.zeros(6, np.int32), np.full((6, 1), -1, np.int32))
    plain = [beams[0] for beams in decoder.beam_search(features, 3)]
    assert [tokens for tokens, *_ in guided] == [hypothesis.token_ids for hypothesis in plain]
    np.testing.assert_allclose([score for _, score, *_ in guided], [h.log_probability for h in plain], rtol=1e-6)
    assert {met for _, _, met, _ in guided} == {0}


def test_a_caption_s_score_is_the_search_s(decoder):
    rng = np.random.default_rng(9)
    features = rng.normal(scale=2.0, size=(4, FEATURES)).astype(np.float32)
    best = [beams[0] for beams in decoder.beam_search(features, 3)]
    rows = np.zeros((4, LENGTH + 1), np.int32)
    for row, hypothesis in zip(rows, best):
        row[:len(hypothesis.token_ids)] = hypothesis.token_ids
    scores, lengths = (tensor.numpy() for tensor in decoder.score_in_graph(features, rows))
    np.testing.assert_allclose(scores, [h.log_probability for h in best], rtol=1e-5)
    assert list(lengths) == [len(h.token_ids) for h in best]
