"""The attention decoder: shapes, masking, the attention weights and their penalty, saving, decoding,
and the whole pipeline with --features spatial / --decoder attention / --attention_map."""
import json
import os
import shutil
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from decoders.attention import build_attention_model
from conftest import MOBILENET_NOTOP, PROJECT, SHARED_FLICKR, needs_shared, tiny_config
from decoders.decoding import CaptionDecoder
from inputs.feature_store import FeatureStore, open_features
from scoring.report import attention_figure
from inputs.vocabulary import END_ID, PAD_ID, START_ID

VOCABULARY, REGIONS, CHANNELS = 30, 9, 6


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    config = tiny_config("", "", embedding_dim=8, units=8, attention_units=5, attention_regularization=1.0)
    return build_attention_model(config, VOCABULARY, (REGIONS, CHANNELS))


def random_captions(rng, lengths, width):
    captions = np.zeros((len(lengths), width), np.int32)
    for row, length in enumerate(lengths):
        captions[row, 0] = START_ID
        captions[row, 1:length + 1] = rng.integers(4, VOCABULARY, size=length)
    return captions


def attention_outputs(model, features, tokens, training=False):
    """The attention layer's (outputs, contexts, weights) for these features and input tokens."""
    regions = model.get_layer("region_projection")(features)
    words = model.get_layer("word_embedding")(tokens)
    return model.get_layer("attention_lstm")(regions, words, training=training)


def test_shapes_and_weights_sum_to_one_over_regions(model):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, REGIONS, CHANNELS)).astype(np.float32)
    tokens = random_captions(rng, [2, 6, 4], 7)
    probabilities = model.predict([features, tokens], verbose=0)
    assert probabilities.shape == (3, 7, VOCABULARY)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    outputs, contexts, weights = (np.asarray(t) for t in attention_outputs(model, features, tokens))
    assert outputs.shape == (3, 7, 8) and contexts.shape == (3, 7, 8) and weights.shape == (3, 7, REGIONS)
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


def test_padding_changes_nothing_and_is_left_out_of_the_penalty(model):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, REGIONS, CHANNELS)).astype(np.float32)
    short = random_captions(rng, [3, 5], 6)
    padded = np.concatenate([short, np.zeros((2, 7), np.int32)], axis=1)
    np.testing.assert_allclose(model.predict([features, padded], verbose=0)[:, :6],
                               model.predict([features, short], verbose=0), atol=1e-6)

    layer = model.get_layer("attention_lstm")
    penalties = []
    for tokens in (short, padded):
        _, _, weights = attention_outputs(model, features, tokens, training=True)
        penalty = float(layer.losses[-1])
        # By hand: mean over images and regions of (1 - attention a region got over the real words)^2.
        real = (tokens != PAD_ID)[..., None]
        expected = np.mean((1.0 - (np.asarray(weights) * real).sum(axis=1)) ** 2)
        assert penalty == pytest.approx(expected, rel=1e-5)
        penalties.append(penalty)
    assert penalties[0] == pytest.approx(penalties[1], rel=1e-5)
    attention_outputs(model, features, short, training=False)
    assert not layer.losses  # no penalty outside training


def test_penalty_enters_the_training_loss_only():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(4, REGIONS, CHANNELS)).astype(np.float32)
    tokens = random_captions(rng, [3, 4, 5, 2], 6)
    losses = {}
    for weight in (0.0, 10.0):
        keras.utils.set_random_seed(0)  # the same initial weights for both
        config = tiny_config("", "", embedding_dim=8, units=8, attention_units=5, dropout=0.0,
                             attention_regularization=weight)
        candidate = build_attention_model(config, VOCABULARY, (REGIONS, CHANNELS))
        candidate.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
        history = candidate.fit([features, tokens[:, :-1]], tokens[:, 1:], epochs=1, batch_size=4, verbose=0)
        losses[weight] = (history.history["loss"][0], candidate.evaluate([features, tokens[:, :-1]], tokens[:, 1:],
                                                                          verbose=0))
    assert losses[10.0][0] > losses[0.0][0] + 1.0  # the penalty is part of what training minimises
    assert losses[10.0][1] == pytest.approx(losses[0.0][1], rel=1e-5)  # and not of the reported dev loss


def test_save_and_load_round_trip(model, tmp_path):
    rng = np.random.default_rng(3)
    features = rng.normal(size=(2, REGIONS, CHANNELS)).astype(np.float32)
    tokens = random_captions(rng, [4, 2], 5)
    path = str(tmp_path / "attention.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict([features, tokens], verbose=0),
                               model.predict([features, tokens], verbose=0), atol=1e-6)
    assert loaded.get_layer("attention_lstm").get_config()["attention_units"] == 5


def test_an_attention_model_saved_when_the_layer_lived_in_attention_py_still_loads():
    """tests/data/attention_decoder_v1.keras was saved while the layer's module was `attention` (the top
    folder); it loads by its registered name, captioner>AttentionLSTM, and computes what it computed then."""
    from serving.loading import load_decoder

    folder = os.path.join(PROJECT, "tests", "data")
    loaded = load_decoder(os.path.join(folder, "attention_decoder_v1.keras"))
    assert type(loaded.get_layer("attention_lstm")).__module__ == "decoders.attention"
    features = np.random.RandomState(0).rand(2, 4, 6).astype("float32")
    tokens = np.array([[2, 5, 7], [2, 4, 0]], "int32")
    np.testing.assert_allclose(loaded([features, tokens]).numpy(),
                               np.load(os.path.join(folder, "attention_decoder_v1_probabilities.npy")), atol=1e-6)


def test_batched_decoding_matches_the_training_graph_and_beam_one_is_greedy(model):
    sys.path.insert(0, os.path.join(PROJECT, "benchmarks"))
    from tutorial_baselines import beam_per_word, greedy_per_word

    rng = np.random.default_rng(4)
    features = rng.normal(scale=3.0, size=(5, REGIONS, CHANNELS)).astype(np.float32)
    decoder = CaptionDecoder(model, max_length=5)
    greedy = decoder.greedy(features, batch_size=3)
    at_one = decoder.beam_search(features, beam_size=1)
    beams = decoder.beam_search(features, beam_size=3, batch_size=2)
    full_model = lambda inputs: model(inputs, training=False)  # noqa: E731
    for row in range(5):
        # The step decoder must pick what the whole model, re-run on each prefix, picks.
        expected = greedy_per_word(full_model, features[row], 5)
        assert [int(t) for t in greedy[row]][:len(expected)] == expected
        assert at_one[row][0].token_ids == expected
        per_beam = beam_per_word(full_model, features[row], 5, 3)
        assert [h.token_ids for h in beams[row]] == [tokens for tokens, _ in per_beam]
        np.testing.assert_allclose([h.log_probability for h in beams[row]], [s for _, s in per_beam], rtol=1e-4)
        assert all(h.token_ids and h.token_ids[0] != END_ID for h in beams[row])


def test_attention_figure_has_a_panel_per_word_and_checks_its_input():
    image = Image.new("RGB", (64, 40), (200, 10, 10))
    weights = np.full((3, 9), 1 / 9, np.float32)
    weights[1] = np.eye(9)[4]  # the second word looks at the centre only
    figure = attention_figure(image, ["a", "red", "square"], weights, columns=2, size=30)
    assert figure.size == (60, 2 * (30 + 26))
    centre_word = np.asarray(figure)[(30 + 26) + 26:, :30]  # panels: image, a / red, square
    assert centre_word[15, 15, 0] > 150 and centre_word[2, 2, 0] < 60  # lit centre, dark corner
    with pytest.raises(ValueError, match="3 words"):
        attention_figure(image, ["a", "red", "square"], np.ones((2, 9)))
    with pytest.raises(ValueError, match="square map"):
        attention_figure(image, ["a"], np.ones((1, 8)))


def test_spatial_store_keeps_the_map_shape_in_half_precision(tmp_path):
    store = FeatureStore(str(tmp_path), "f", (4, 3), "float16", identity={"encoder": "x"})
    maps = np.arange(24, dtype=np.float32).reshape(2, 4, 3) / 7
    store.append(["a", "b"], maps)
    again = FeatureStore(str(tmp_path), "f", (4, 3), "float16", identity={"encoder": "x"})
    assert again.matrix().shape == (2, 4, 3) and again.matrix().dtype == np.float16
    np.testing.assert_allclose(again.matrix()[1], maps[1], rtol=1e-3)
    with pytest.raises(ValueError, match=r"features of shape \(4, 3\)"):
        again.append(["c"], np.zeros((1, 12), np.float32))


def test_spatial_features_attention_training_resume_evaluate_and_maps(attention_run, tmp_path):
    from serving.captioner import Captioner
    from evaluate import evaluate
    from predict import predict
    from training.history import read_history
    from train import train

    tiny_dataset, run_dir = attention_run.data_dir, str(tmp_path / "run")
    shutil.copytree(attention_run.run_dir, run_dir)
    captioner = Captioner(run_dir)
    metadata = captioner.metadata
    assert metadata["features"] == "spatial" and metadata["feature_shape"] == [49, 1280]
    # train.py extracted spatial features itself (no --features spatial given): its record says what it trained on.
    assert attention_run.features == "global"
    with open(os.path.join(run_dir, "config_train.json"), encoding="utf-8") as handle:
        assert json.load(handle)["features"] == "spatial"
    features, rows = open_features(run_dir, metadata)
    assert features.shape == (16, 49, 1280)
    name = sorted(rows)[0]
    image = os.path.join(tiny_dataset, "Flicker8k_Dataset", name)
    _, computed, _ = captioner.image_features([image])
    np.testing.assert_allclose(computed[0], features[rows[name]], rtol=1e-4, atol=1e-6)

    assert train(tiny_config(tiny_dataset, run_dir, decoder="attention", epochs=2, resume=True,
                             attention_units=8))["epochs_done"] == 2
    assert [row["epoch"] for row in read_history(os.path.join(run_dir, "history.csv"))] == [1, 2]
    with pytest.raises(ValueError, match="--decoder attention"):
        train(tiny_config(tiny_dataset, run_dir, epochs=3, resume=True))

    scores = evaluate(tiny_config(tiny_dataset, run_dir, split="test", beam_size=3))
    assert scores["images_scored"] == 3 and scores["scores"]["CIDEr-D"] >= 0

    out = str(tmp_path / "map.png")
    assert predict(tiny_config(tiny_dataset, run_dir, image_path=[image], attention_map=out)) == 0
    caption = Captioner(run_dir).caption_features(computed)[0]
    with Image.open(out) as figure:
        panels = len(caption.split()) + 1
        assert figure.size == (224 * min(panels, 5), (224 + 26) * ((panels + 4) // 5))
    # Two images of the same name from different folders: one map each, none overwritten.
    other_folder = tmp_path / "other"
    other_folder.mkdir()
    shutil.copy(image, other_folder / name)
    assert predict(tiny_config(tiny_dataset, run_dir, image_path=[image, str(other_folder / name)],
                               attention_map=out)) == 0
    stem = os.path.splitext(name)[0]
    assert os.path.exists(tmp_path / f"map_{stem}.png") and os.path.exists(tmp_path / f"map_{stem}_2.png")


def test_decoder_and_features_must_match(trained_run, tmp_path):
    from model import build_model
    from predict import predict
    from train import train

    config_path = os.path.join(trained_run.run_dir, "config_train.json")
    with open(config_path, encoding="utf-8") as handle:
        recorded = handle.read()
    with pytest.raises(ValueError, match="--features spatial"):
        train(tiny_config(trained_run.data_dir, trained_run.run_dir, decoder="attention", epochs=1))
    with open(config_path, encoding="utf-8") as handle:
        assert handle.read() == recorded  # a refused command leaves the run's record alone
    with pytest.raises(ValueError, match="--decoder attention"):
        build_model(tiny_config("", ""), VOCABULARY, (REGIONS, CHANNELS))
    image = os.path.join(trained_run.data_dir, "Flicker8k_Dataset", os.listdir(
        os.path.join(trained_run.data_dir, "Flicker8k_Dataset"))[0])
    with pytest.raises(ValueError, match="merge decoder"):
        predict(tiny_config(trained_run.data_dir, trained_run.run_dir, image_path=[image],
                            attention_map=str(tmp_path / "x.png")))
    assert not os.path.exists(tmp_path / "x.png")


@needs_shared
@pytest.mark.skipif(not os.path.exists(MOBILENET_NOTOP), reason="the shared MobileNetV2 weights are absent")
def test_imagenet_spatial_features_are_float16_and_predict_computes_them(tmp_path):
    from serving.captioner import Captioner
    from train import train

    run_dir = str(tmp_path / "run")
    train(tiny_config(SHARED_FLICKR, run_dir, weights=MOBILENET_NOTOP, decoder="attention", limit=2, epochs=1))
    captioner = Captioner(run_dir)
    metadata = captioner.metadata
    assert metadata["features"] == "spatial" and metadata["feature_store"]["dtype"] == "float16"
    features, rows = open_features(run_dir, metadata)
    assert features.dtype == np.float16 and features.shape[1:] == (49, 1280)
    assert float(np.abs(features).max()) > 0.1  # real activations survive half precision
    name = sorted(rows)[0]
    _, computed, _ = captioner.image_features([os.path.join(metadata["image_dir"], name)])
    # Equal up to one float16 step: a batch of one and a batch of four differ in the last float32 bits,
    # which now and then round to neighbouring half-precision values.
    stored = features[rows[name]].astype(np.float32)
    np.testing.assert_allclose(computed[0], stored, rtol=2 ** -10, atol=2 ** -14)
    assert np.mean(computed[0] == stored) > 0.99
