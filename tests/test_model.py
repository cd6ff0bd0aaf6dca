"""The merge decoder: teacher forcing computes what the prefix formulation computes, and the
batched decoder picks what a per-word model.predict loop picks."""
import os
import sys

import numpy as np
import pytest

from conftest import PROJECT, tiny_config
from decoders.decoding import CaptionDecoder
from model import build_merge_model
from inputs.vocabulary import END_ID, PAD_ID, START_ID, UNK_ID

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


def test_batched_greedy_equals_per_word_loop(model):
    sys.path.insert(0, os.path.join(PROJECT, "benchmarks"))
    from tutorial_baselines import greedy_per_word

    # Bias the output layer so that some captions end early and others run to the maximum length.
    rng = np.random.default_rng(2)
    features = rng.normal(scale=3.0, size=(6, FEATURES)).astype(np.float32)
    decoder = CaptionDecoder(model, max_length=6)
    batched = decoder.greedy(features, batch_size=4)
    for row in range(6):
        expected = greedy_per_word(call_model(model), features[row], 6)
        got = [int(t) for t in batched[row]][:len(expected)]
        assert got == expected
        assert all(t == PAD_ID for t in batched[row][len(expected):])


def call_model(model):
    return lambda inputs: model(inputs, training=False)


def test_beam_search_equals_the_per_beam_loop_and_greedy_at_beam_one(model):
    sys.path.insert(0, os.path.join(PROJECT, "benchmarks"))
    from tutorial_baselines import beam_per_word

    rng = np.random.default_rng(3)
    features = rng.normal(scale=3.0, size=(5, FEATURES)).astype(np.float32)
    decoder = CaptionDecoder(model, max_length=5)
    greedy = decoder.greedy(features)
    at_one = decoder.beam_search(features, beam_size=1)
    batched = decoder.beam_search(features, beam_size=3)
    for row in range(5):
        assert at_one[row][0].token_ids == [int(t) for t in greedy[row] if t != PAD_ID]
        expected = beam_per_word(call_model(model), features[row], 5, 3)
        assert [h.token_ids for h in batched[row]] == [tokens for tokens, _ in expected]
        np.testing.assert_allclose([h.log_probability for h in batched[row]], [s for _, s in expected], rtol=1e-4)
        assert all(0 < len(h.token_ids) <= 6 and h.token_ids[0] != END_ID for h in batched[row])


def test_beam_larger_than_vocabulary_and_length_penalty(model):
    features = np.random.default_rng(4).normal(size=(2, FEATURES)).astype(np.float32)
    decoder = CaptionDecoder(model, max_length=4)
    wide = decoder.beam_search(features, beam_size=500)
    assert all(1 <= len(beams) <= VOCABULARY - 3 for beams in wide)
    assert all(np.isfinite(h.score) and h.token_ids for beams in wide for h in beams)
    normalised = decoder.beam_search(features, beam_size=3, length_penalty=1.0)
    for beams in normalised:
        assert [h.score for h in beams] == sorted((h.score for h in beams), reverse=True)
        for h in beams:
            assert h.score == pytest.approx(h.log_probability / len(h.token_ids))
    with pytest.raises(ValueError, match="at least 1"):
        decoder.beam_search(features, beam_size=0)


@pytest.mark.parametrize("decoder, feature_shape", [("merge", (FEATURES,)), ("attention", (9, FEATURES))])
def test_training_model_gives_the_padded_loss_and_gradients(decoder, feature_shape):
    """train.py fits build_training_model, which applies the output layer at real positions only:
    same probabilities there, and the same loss and gradients (attention penalty included) as the
    captioner with padding weighted 0. Its optimizer is the captioner's, so the saved model carries it."""
    import keras
    import tensorflow as tf

    from data_loader import caption_batches
    from model import build_model, build_training_model, compile_model

    keras.utils.set_random_seed(3)
    # No dropout: the two models draw different random masks, and the comparison must be exact.
    captioner = build_model(tiny_config("", "", decoder=decoder, embedding_dim=8, units=8, attention_units=8,
                                        dropout=0.0), VOCABULARY, feature_shape)
    compile_model(captioner, 1e-3)
    training_model = build_training_model(captioner)
    assert training_model.optimizer is captioner.optimizer

    rng = np.random.default_rng(2)
    features = rng.normal(size=(6, *feature_shape)).astype(np.float32)
    tokens = np.zeros((6, 10), np.int32)
    for row, length in enumerate([3, 8, 1, 5, 2, 6]):
        tokens[row, 0], tokens[row, length + 1] = START_ID, END_ID
        tokens[row, 1:length + 1] = rng.integers(4, VOCABULARY, size=length)
    (inputs, targets, weights), = caption_batches(features, np.arange(6), tokens, 6, False, 0)
    (flat_inputs, real_next_words), = caption_batches(features, np.arange(6), tokens, 6, False, 0, flat_targets=True)
    assert int(weights.numpy().sum()) == len(real_next_words) == 3 + 8 + 1 + 5 + 2 + 6 + 6  # words and <end>
    np.testing.assert_array_equal(real_next_words, targets.numpy()[weights.numpy() > 0])

    np.testing.assert_allclose(training_model(flat_inputs).numpy(),
                               captioner(inputs).numpy()[weights.numpy() > 0], atol=1e-6)
    with tf.GradientTape(persistent=True) as tape:
        padded_loss = captioner.compute_loss(inputs, targets, captioner(inputs, training=True), weights)
        real_loss = training_model.compute_loss(flat_inputs, real_next_words,
                                                training_model(flat_inputs, training=True))
    if decoder == "attention":
        assert captioner.losses and training_model.losses  # the penalty is part of both losses
    np.testing.assert_allclose(float(real_loss), float(padded_loss), rtol=1e-6)
    for padded, real in zip(tape.gradient(padded_loss, captioner.trainable_variables),
                            tape.gradient(real_loss, captioner.trainable_variables)):
        np.testing.assert_allclose(tf.convert_to_tensor(real).numpy(), tf.convert_to_tensor(padded).numpy(),
                                   atol=1e-6)


def test_optimizer_state_of_the_training_model_is_saved_with_the_captioner(tmp_path):
    """Resume loads the captioner's .keras file: the Adam moments that fitting the training model
    built must come back attached to the same weights."""
    import keras

    from data_loader import caption_batches
    from model import build_merge_model, build_training_model, compile_model

    keras.utils.set_random_seed(4)
    captioner = build_merge_model(tiny_config("", "", embedding_dim=8, units=8), VOCABULARY, FEATURES)
    compile_model(captioner, 1e-2)
    rng = np.random.default_rng(5)
    tokens = np.zeros((8, 6), np.int32)
    tokens[:, 0], tokens[:, 1:4], tokens[:, 4] = START_ID, rng.integers(4, VOCABULARY, size=(8, 3)), END_ID
    batches = caption_batches(rng.normal(size=(8, FEATURES)).astype(np.float32), np.arange(8), tokens, 4, True, 0,
                              flat_targets=True)
    build_training_model(captioner).fit(batches, epochs=2, verbose=0)
    captioner.save(tmp_path / "last.keras")
    loaded = keras.models.load_model(tmp_path / "last.keras")

    def moments(model):
        optimizer = model.optimizer
        return {variable.path: (optimizer._momentums[optimizer._get_variable_index(variable)].numpy(),
                                optimizer._velocities[optimizer._get_variable_index(variable)].numpy())
                for variable in model.trainable_variables}

    saved, restored = moments(captioner), moments(loaded)
    assert saved.keys() == restored.keys() and int(loaded.optimizer.iterations) == 4
    for path, (momentum, velocity) in saved.items():
        assert np.abs(momentum).max() > 0, path
        np.testing.assert_array_equal(restored[path][0], momentum)
        np.testing.assert_array_equal(restored[path][1], velocity)


def has_repeated_ngram(tokens, n):
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("no_repeat", [0, 1, 2, 3])
def test_decoding_rules_equal_the_plain_per_word_rules(model, no_repeat):
    sys.path.insert(0, os.path.join(PROJECT, "benchmarks"))
    from tutorial_baselines import beam_per_word, greedy_per_word

    rng = np.random.default_rng(5)
    features = rng.normal(scale=3.0, size=(6, FEATURES)).astype(np.float32)
    banned_endings = list(range(4, 20))
    decoder = CaptionDecoder(model, max_length=8, no_repeat_ngram_size=no_repeat, banned_endings=banned_endings)
    greedy = decoder.greedy(features, batch_size=4)
    beams = decoder.beam_search(features, beam_size=3)
    repeated = 0
    for row in range(6):
        expected = greedy_per_word(call_model(model), features[row], 8, no_repeat, banned_endings)
        assert [int(t) for t in greedy[row]][:len(expected)] == expected
        expected_beams = beam_per_word(call_model(model), features[row], 8, 3, no_repeat, banned_endings)
        assert [h.token_ids for h in beams[row]] == [tokens for tokens, _ in expected_beams]
        for tokens in [expected] + [h.token_ids for h in beams[row]]:
            words = [t for t in tokens if t != END_ID]
            assert UNK_ID not in tokens
            if tokens[-1] == END_ID:
                assert words[-1] not in banned_endings
            if no_repeat:
                assert not has_repeated_ngram(words, no_repeat)
            repeated += has_repeated_ngram(words, 2)
    if not no_repeat:
        assert repeated > 0  # the untrained model repeats itself, so the rule above had work to do


def test_sampling_draws_from_the_model_and_follows_the_rules(model):
    features = np.random.default_rng(6).normal(size=(3, FEATURES)).astype(np.float32)
    decoder = CaptionDecoder(model, max_length=6, banned_endings=[5])
    samples = decoder.sample(features, 400, seed=(6, 0))
    # The seed alone fixes the draws (TensorFlow's global generator plays no part): a resumed run repeats them.
    assert np.array_equal(decoder.sample(features, 400, seed=(6, 0)), samples)
    assert not np.array_equal(decoder.sample(features, 400, seed=(6, 1)), samples)
    assert samples.shape[0] == 1200
    first_words = samples[:400, 0]
    assert not np.isin(samples, [START_ID, UNK_ID]).any() and not (first_words == END_ID).any()
    ends = samples == END_ID
    assert not (ends[:, 1:] & (samples[:, :-1] == 5)).any()
    # The first word's frequencies follow the model's first-step distribution (PAD/START/UNK/END removed).
    probabilities = call_model(model)([features[:1], np.array([[START_ID]], np.int32)]).numpy()[0, 0]
    probabilities[[PAD_ID, START_ID, UNK_ID, END_ID]] = 0
    probabilities /= probabilities.sum()
    observed = np.bincount(first_words, minlength=VOCABULARY) / 400
    assert np.abs(observed - probabilities).max() < 0.08
    assert len({tuple(row) for row in samples[:400]}) > 50  # draws, not one caption repeated


def test_ensemble_of_one_is_the_model_and_of_two_copies_gives_the_same_captions(model):
    import keras

    features = np.random.default_rng(7).normal(scale=3.0, size=(5, FEATURES)).astype(np.float32)
    single = CaptionDecoder(model, max_length=6)
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    for ensemble in (CaptionDecoder([model], max_length=6), CaptionDecoder([model, twin], max_length=6),
                     CaptionDecoder([model, twin], max_length=6, ensemble_mean="arithmetic")):
        np.testing.assert_array_equal(ensemble.greedy(features), single.greedy(features))
        for ours, theirs in zip(ensemble.beam_search(features, 3), single.beam_search(features, 3)):
            assert [h.token_ids for h in ours] == [h.token_ids for h in theirs]
            np.testing.assert_allclose([h.log_probability for h in ours], [h.log_probability for h in theirs],
                                       rtol=1e-5)


@pytest.mark.parametrize("mean", ["arithmetic", "geometric"])
def test_ensemble_averages_the_word_probabilities(model, mean):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(11)
    other = build_merge_model(tiny_config("", "", embedding_dim=8, units=8), VOCABULARY, FEATURES)
    features = np.random.default_rng(8).normal(scale=3.0, size=(4, FEATURES)).astype(np.float32)

    def averaged(inputs):
        ours, theirs = model(inputs, training=False), other(inputs, training=False)
        if mean == "arithmetic":
            return (ours + theirs) / 2
        return tf.nn.softmax((tf.math.log(ours) + tf.math.log(theirs)) / 2, axis=-1)

    sys.path.insert(0, os.path.join(PROJECT, "benchmarks"))
    from tutorial_baselines import beam_per_word, greedy_per_word

    decoder = CaptionDecoder([model, other], max_length=6, ensemble_mean=mean)
    greedy = decoder.greedy(features)
    beams = decoder.beam_search(features, 3)
    for row in range(4):
        expected = greedy_per_word(averaged, features[row], 6)
        assert [int(t) for t in greedy[row]][:len(expected)] == expected
        expected_beams = beam_per_word(averaged, features[row], 6, 3)
        assert [h.token_ids for h in beams[row]] == [tokens for tokens, _ in expected_beams]
        np.testing.assert_allclose([h.log_probability for h in beams[row]], [s for _, s in expected_beams], rtol=1e-4)
    # The two means rank words differently, so the same two models caption differently under them.
    other_mean = "geometric" if mean == "arithmetic" else "arithmetic"
    other_beams = CaptionDecoder([model, other], max_length=6, ensemble_mean=other_mean).beam_search(features, 3)
    assert [b[0].log_probability for b in beams] != [b[0].log_probability for b in other_beams]
    with pytest.raises(ValueError, match="--ensemble_mean must be one of arithmetic, geometric"):
        CaptionDecoder([model, other], max_length=6, ensemble_mean="median")
