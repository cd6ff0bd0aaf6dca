"""The merge decoder: teacher forcing computes what the prefix formulation computes, and the
batched decoder picks what a per-word model.predict loop picks."""
import numpy as np
import pytest

from conftest import tiny_config
from decoding import GreedyDecoder
from model import build_merge_model
from vocabulary import END_ID, PAD_ID, START_ID

VOCABULARY, FEATURES = 30, 12


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)
    return build_merge_model(tiny_config("", "", embedding_dim=8, units=8), VOCABULARY, FEATURES)


def test_shapes_one_prediction_per_position(model):
    out = model.predict([np.zeros((3, FEATURES), np.float32), np.ones((3, 7), np.int32)], verbose=0)
    assert out.shape == (3, 7, VOCABULARY)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_teacher_forcing_equals_prefix_formulation(model):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(4, FEATURES)).astype(np.float32)
    captions = np.zeros((4, 9), np.int32)
    for row, length in enumerate([3, 8, 1, 5]):
        captions[row, 0] = START_ID
        captions[row, 1:length + 1] = rng.integers(4, VOCABULARY, size=length)
    whole = model.predict([features, captions], verbose=0)
    for row in range(4):
        real = int((captions[row] != PAD_ID).sum())
        # The tutorials' formulation: every prefix a sample of its own, left-padded to the full length.
        prefixes = np.zeros((real, 9), np.int32)
        for position in range(real):
            prefixes[position, 9 - position - 1:] = captions[row, :position + 1]
        alone = model.predict([np.repeat(features[row:row + 1], real, 0), prefixes], verbose=0)[:, -1]
        np.testing.assert_allclose(whole[row, :real], alone, atol=1e-5)


def per_word_loop(model, image_features, max_length):
    """Greedy decoding as the tutorials write it: one model.predict per word, whole prefix each time."""
    tokens = [START_ID]
    for _ in range(max_length + 1):
        probabilities = np.array(model([image_features[None], np.array([tokens], np.int32)], training=False))[0, -1]
        probabilities[[PAD_ID, START_ID]] = -1
        tokens.append(int(np.argmax(probabilities)))
        if tokens[-1] == END_ID:
            break
    return tokens[1:]


def test_batched_greedy_equals_per_word_loop(model):
    # Bias the output layer so that some captions end early and others run to the maximum length.
    rng = np.random.default_rng(2)
    features = rng.normal(scale=3.0, size=(6, FEATURES)).astype(np.float32)
    decoder = GreedyDecoder(model, max_length=6)
    batched = decoder.token_ids(features, batch_size=4)
    for row in range(6):
        expected = per_word_loop(model, features[row], 6)
        got = [int(t) for t in batched[row]][:len(expected)]
        assert got == expected
        assert all(t == PAD_ID for t in batched[row][len(expected):])
