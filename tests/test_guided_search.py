"""Constrained beam search (decoders/guided_search.py): against a plain per-image reference written from
the method's description, with no constraint like beam search, and its captions contain the words asked."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from decoders.decoding import CaptionDecoder
from decoders.guided_search import GuidedSearch
from inputs.vocabulary import END_ID, PAD_ID, START_ID
from model import build_merge_model

VOCABULARY, FEATURES, LENGTH = 24, 10, 7


@pytest.fixture(scope="module")
def decoder():
    import keras

    keras.utils.set_random_seed(4)
    model = build_merge_model(tiny_config("", "", embedding_dim=8, units=8), VOCABULARY, FEATURES)
    return CaptionDecoder(model, max_length=LENGTH)


def reference_search(decoder, image_features, satisfies, beam_size, length_penalty=0.0):
    """One image, one beam at a time, in plain Python: a beam per set of constraints met; each word moves a
    caption to the set plus the constraints the word meets; each set keeps its best `beam_size` (ties: the
    earlier set, beam and word first, as top_k does); the answer is the best caption meeting the most
    constraints. Returns (token ids up to and with <end>, log-probability)."""
    steps = decoder.max_length + 1
    constants, start_state = decoder.steps.start(tf.constant(image_features[None], tf.float32))
    present = [bool(satisfies[c].any()) for c in range(2)]
    start = sum(1 << c for c in range(2) if not present[c])
    bits = [sum(1 << c for c in range(2) if satisfies[c, word]) for word in range(decoder.vocabulary_size)]
    # A beam: (score, tokens, finished, LSTM state)
    beams = {state: [] for state in range(4)}
    beams[start] = [(0.0, [], False, start_state)]
    for step in range(steps):
        candidates = {state: [] for state in range(4)}
        for state in range(4):
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
                        candidates[state | bits[word]].append(
                            (score + value, (state, rank, word), tokens + [word], word == END_ID, new_lstm))
        for state in range(4):
            chosen = sorted(candidates[state], key=lambda c: (-c[0], c[1]))[:beam_size]
            beams[state] = [(score, tokens, finished, lstm) for score, _, tokens, finished, lstm in chosen]
        if all(finished for state in beams.values() for _, _, finished, _ in state):
            break
    required = sum(1 << c for c in range(2) if present[c])
    best = None
    for state in range(4):
        met = bin(state & required).count("1")
        for score, tokens, _, _ in beams[state]:
            words = [t for t in tokens if t != PAD_ID]
            length = len(words)  # words and <end>, as the batched search counts them
            key = (met, score / max(length, 1) ** length_penalty)
            if best is None or key > best[0]:
                best = (key, words, score)
    return best[1], best[2]


def random_constraints(rng, images, words, count):
    satisfies = np.zeros((images, 2, VOCABULARY), bool)
    for image in range(images):
        for constraint in range(count):
            satisfies[image, constraint, rng.choice(np.arange(4, VOCABULARY), size=words, replace=False)] = True
    return satisfies


@pytest.mark.parametrize("beam_size, constraints, length_penalty", [(3, 1, 0.0), (2, 2, 0.0), (3, 2, 1.0)])
def test_batched_search_equals_the_per_image_reference(decoder, beam_size, constraints, length_penalty):
    rng = np.random.default_rng(beam_size + constraints)
    features = rng.normal(scale=2.0, size=(5, FEATURES)).astype(np.float32)
    satisfies = random_constraints(rng, 5, 2, constraints)
    satisfies[4] = False  # and one image with no constraint, in the same batch
    batched = GuidedSearch(decoder).best(features, satisfies, beam_size, length_penalty, batch_size=3)
    for image in range(5):
        tokens, score = reference_search(decoder, features[image], satisfies[image], beam_size, length_penalty)
        assert batched[image][0] == tokens
        np.testing.assert_allclose(batched[image][1], score, rtol=1e-5, atol=1e-5)


def test_every_caption_meets_its_constraints(decoder):
    rng = np.random.default_rng(7)
    features = rng.normal(scale=2.0, size=(8, FEATURES)).astype(np.float32)
    satisfies = random_constraints(rng, 8, 1, 2)  # one word each: the caption must say both
    for image, (tokens, _, met) in enumerate(GuidedSearch(decoder).best(features, satisfies, 3)):
        assert met == 2
        for constraint in range(2):
            assert set(np.flatnonzero(satisfies[image, constraint])) & set(tokens)
        assert tokens[-1] == END_ID or len(tokens) == LENGTH + 1


def test_without_constraints_it_is_beam_search(decoder):
    rng = np.random.default_rng(8)
    features = rng.normal(scale=2.0, size=(6, FEATURES)).astype(np.float32)
    guided = GuidedSearch(decoder).best(features, np.zeros((6, 2, VOCABULARY), bool), 3)
    plain = [beams[0] for beams in decoder.beam_search(features, 3)]
    assert [tokens for tokens, _, met in guided] == [hypothesis.token_ids for hypothesis in plain]
    np.testing.assert_allclose([score for _, score, _ in guided], [h.log_probability for h in plain], rtol=1e-6)
    assert {met for _, _, met in guided} == {0}
