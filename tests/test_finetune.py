"""Encoder fine-tuning (training/finetune.py): which weights change, what the run folder holds after it, resume, and
bad input. Tiny runs with an untrained MobileNetV2 (--weights none)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from conftest import fine_tune_copy


def frozen_encoder(config):
    from inputs.encoders import build_encoder

    return build_encoder(config.encoder, "none", config.encoder_seed, config.features)


def cnn_weights(encoder_model):
    from training.encoder_tuning import cnn_layers

    return {(layer.name, weight.path): np.asarray(weight) for layer in cnn_layers(encoder_model)
            for weight in layer.weights}


def test_only_the_chosen_layers_change_and_batch_norm_statistics_stay(fine_tuned_run):
    import keras

    from training.encoder_tuning import make_top_trainable
    from inputs.run_folder import LAST_ENCODER

    config, _ = fine_tuned_run
    before = frozen_encoder(config)
    chosen = make_top_trainable(before, config.fine_tune_layers)
    assert chosen == ["block_16_project_BN", "Conv_1", "Conv_1_bn"]
    before = cnn_weights(before)
    after = cnn_weights(keras.models.load_model(os.path.join(config.run_dir, LAST_ENCODER)))
    assert before.keys() == after.keys()
    changed = {key for key in before if not np.array_equal(before[key], after[key])}
    statistics = {key for key in before if "moving_" in key[1]}
    assert statistics and not changed & statistics
    assert {layer for layer, _ in changed} == set(chosen)
    # What moved are trainable weights of the chosen layers: kernels, batch normalisation's gamma and beta.
    assert changed <= {key for key in before if key[0] in chosen and key not in statistics}


def test_fine_tuning_resumes_with_its_optimizer_state(fine_tuned_run):
    import keras

    from training.history import read_history
    from inputs.run_folder import HISTORY, LAST_ENCODER

    config, seen = fine_tuned_run
    assert seen["steps_per_epoch"] == 3  # 10 training images, 4 per batch
    assert "--fine_tune_encoder --resume" in seen["unfinished"]  # no stale features are read meanwhile
    assert seen["state"]["epochs_done"] == 2
    encoder = keras.models.load_model(os.path.join(config.run_dir, LAST_ENCODER))
    assert int(encoder.optimizer.iterations.numpy()) == 2 * seen["steps_per_epoch"]
    rows = read_history(os.path.join(config.run_dir, HISTORY))
    assert [row["objective"] for row in rows] == ["xe", "xe", "fine_tune", "fine_tune"]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    # Fine-tuning rewrote the cross-entropy rows before its own: every epoch is still a whole number.
    with open(os.path.join(config.run_dir, HISTORY), encoding="utf-8") as handle:
        assert [line.split(",")[0] for line in handle.read().splitlines()] == ["epoch", "1", "2", "3", "4"]


def test_a_fine_tuned_run_owns_its_encoder_captions_and_keeps_the_frozen_run(fine_tuned_run, trained_run, capsys):
    from serving.captioner import Captioner
    from inputs.feature_store import open_features
    from inputs.run_folder import ENCODER_MODEL, FROZEN_DIR

    config, _ = fine_tuned_run
    captioner = Captioner(config.run_dir)
    tuned = captioner.metadata["fine_tuned_encoder"]
    assert tuned["file"] == ENCODER_MODEL and tuned["features_written"] and len(tuned["trained_layers"]) == 3
    assert "fine-tuned" in captioner.describe()
    features, rows_of = open_features(config.run_dir, captioner.metadata)
    image_dir = captioner.metadata["image_dir"]
    names = sorted(rows_of)[:3]
    kept, from_images, errors = captioner.image_features([os.path.join(image_dir, name) for name in names])
    assert not errors and len(kept) == 3
    # The run's store holds the fine-tuned encoder's features: what predict computes from the files.
    stored = features[[rows_of[name] for name in names]]
    assert np.abs(stored).max() > 1e-3  # trained layers lift the untrained encoder's tiny activations
    np.testing.assert_allclose(from_images, stored, rtol=1e-4, atol=1e-6 * np.abs(stored).max())
    frozen = Captioner(os.path.join(config.run_dir, FROZEN_DIR))
    frozen_features, frozen_rows = open_features(frozen.run_dir, frozen.metadata)
    assert not frozen.fine_tuned
    frozen_stored = frozen_features[frozen_rows[names[0]]]
    np.testing.assert_allclose(frozen.image_features([os.path.join(image_dir, names[0])])[1][0], frozen_stored,
                               rtol=1e-4, atol=1e-6 * np.abs(frozen_stored).max())
    assert np.linalg.norm(frozen_stored - stored[0]) > 0.5 * np.linalg.norm(stored[0])
    captions, _, errors, _ = captioner.caption_files([os.path.join(image_dir, name) for name in names])
    assert not errors and all(isinstance(caption, str) for caption in captions.values())

    assert Captioner(config.run_dir, weights="imagenet").weights == "none"  # the run's own encoder, not these
    assert "--weights imagenet is not used" in capsys.readouterr().err
    with pytest.raises(ValueError, match="has fine-tuned encoder.keras sha256 \\w+, .* has the frozen encoder; .*share one"):
        Captioner([trained_run.run_dir, config.run_dir])


def test_an_export_of_a_fine_tuned_run_encodes_with_its_encoder(fine_tuned_run):
    """What export.py writes into the SavedModel: its image-features function and its weights
    (test_export.py loads real exports; here, without writing one, that they come from the run's encoder)."""
    import tensorflow as tf

    import export
    from serving.captioner import Captioner
    from serving.encoder_check import cosine_similarities
    from inputs.run_folder import FROZEN_DIR
    from training.encoder_tuning import cnn_layers
    from serving.graph_images import batch_pixels

    config, _ = fine_tuned_run
    captioner = Captioner(config.run_dir)
    image_dir = captioner.metadata["image_dir"]
    path = os.path.join(image_dir, sorted(os.listdir(image_dir))[0])
    with open(path, "rb") as handle:
        pixels = batch_pixels(tf.constant([handle.read()]), 224)
    exported = export.features_function(captioner)(pixels).numpy()
    expected = captioner.image_features([path])[1]
    frozen = Captioner(os.path.join(config.run_dir, FROZEN_DIR)).image_features([path])[1]
    # The file needs resizing, which the graph does within one pixel level of Pillow (test_export.py).
    assert cosine_similarities(exported, expected)[0] > 0.9999
    assert np.linalg.norm(exported - expected) < 0.1 * np.linalg.norm(exported - frozen)
    tuned_kernel = next(layer for layer in cnn_layers(captioner.encoder()) if layer.name == "Conv_1").kernel.numpy()
    assert any(np.array_equal(weight.numpy(), tuned_kernel) for weight in export.module_with_weights(captioner).weights)


def test_a_package_of_a_fine_tuned_run_carries_its_encoder(fine_tuned_run, tmp_path):
    from serving.captioner import Captioner
    from package import package

    config, _ = fine_tuned_run
    folder = str(tmp_path / "package")
    metadata = package(dataclasses.replace(config, package_dir=folder, reference_images=None))
    assert metadata["fine_tuned_encoder"]["file"] == "encoder.keras"
    # The model packaged is the fine-tuning phase's: its state, not the cross-entropy one before it.
    with open(os.path.join(config.run_dir, "training_state_fine_tune.json"), encoding="utf-8") as handle:
        assert metadata["source_run"]["training_state"] == json.load(handle)
    assert metadata["source_run"]["training_phase"] == "fine_tune"
    import keras

    assert getattr(keras.models.load_model(os.path.join(folder, "encoder.keras")), "optimizer", None) is None
    packaged, run = Captioner(folder), Captioner(config.run_dir)
    assert packaged.encoder_agreement() > 0.9999  # the package's own encoder gives the stored reference features
    image_dir = run.metadata["image_dir"]
    paths = [os.path.join(image_dir, name) for name in sorted(os.listdir(image_dir))[:3]]
    captions, features, errors, _ = packaged.caption_files(paths)
    assert not errors and len(captions) == 3
    np.testing.assert_array_equal(np.stack(list(features.values())), run.image_features(paths)[1])


@pytest.mark.slow
def test_fine_tuning_the_attention_decoder_then_self_critical_training(attention_run, tmp_path):
    from serving.captioner import Captioner
    from training.history import read_history
    from inputs.run_folder import HISTORY, XE_MODEL
    from train import train

    config = fine_tune_copy(attention_run, tmp_path, fine_tune_batch_size=10)
    train(config)
    captioner = Captioner(config.run_dir)
    assert captioner.has_attention and captioner.fine_tuned
    image_dir = captioner.metadata["image_dir"]
    name = sorted(os.listdir(image_dir))[0]
    captions, features, errors, _ = captioner.caption_files([os.path.join(image_dir, name)])
    assert not errors and next(iter(features.values())).shape == (49, 1280)
    # Self-critical training after fine-tuning starts from the fine-tuned model, on the new features.
    state = train(dataclasses.replace(config, fine_tune_encoder=False, objective="scst", scst_epochs=1,
                                      scst_samples=2, scst_batch_size=10))
    assert state["epochs_done"] == 1 and os.path.exists(os.path.join(config.run_dir, XE_MODEL))
    rows = read_history(os.path.join(config.run_dir, HISTORY))
    assert [(row["objective"], row["epoch"]) for row in rows] == [("xe", 1), ("fine_tune", 2), ("scst", 3)]
    # Fine-tuning again without --resume starts over from the frozen run: what followed it is forgotten.
    train(config)
    rows = read_history(os.path.join(config.run_dir, HISTORY))
    assert [(row["objective"], row["epoch"]) for row in rows] == [("xe", 1), ("fine_tune", 2)]
    assert not os.path.exists(os.path.join(config.run_dir, XE_MODEL))


def test_after_self_critical_training_with_unreadable_images(trained_run, tmp_path, capsys):
    """Self-critical files move to the frozen run; a missing and a damaged training image are counted."""
    from inputs.run_folder import FROZEN_DIR, SCST_STATE, XE_MODEL
    from train import train

    image_dir = str(tmp_path / "images")
    with open(os.path.join(trained_run.run_dir, "metadata.json"), encoding="utf-8") as handle:
        shutil.copytree(json.load(handle)["image_dir"], image_dir)
    config = fine_tune_copy(trained_run, tmp_path)
    train(dataclasses.replace(config, fine_tune_encoder=False, objective="scst", scst_epochs=1, scst_samples=2,
                              scst_batch_size=4))
    metadata_path = os.path.join(config.run_dir, "metadata.json")
    with open(metadata_path, encoding="utf-8") as handle:
        metadata = json.load(handle)
    with open(metadata_path, "w", encoding="utf-8") as handle:
        json.dump({**metadata, "image_dir": image_dir}, handle)
    with open(os.path.join(config.run_dir, "captions.json"), encoding="utf-8") as handle:
        train_names = sorted(json.load(handle)["train"])
    os.remove(os.path.join(image_dir, train_names[0]))
    with open(os.path.join(image_dir, train_names[1]), "wb") as handle:
        handle.write(b"not a jpeg")
    capsys.readouterr()
    train(config)
    err = capsys.readouterr().err
    assert "skipped 1 training image(s): missing file" in err
    assert "skipped 1 image(s): not an image" in err
    frozen = os.path.join(config.run_dir, FROZEN_DIR)
    for name in (XE_MODEL, SCST_STATE):
        assert os.path.exists(os.path.join(frozen, name)) and not os.path.exists(os.path.join(config.run_dir, name))


def test_bad_input_is_one_line(trained_run, tmp_path):
    from train import train

    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    with pytest.raises(ValueError, match="no metadata.json; encoder fine-tuning continues a trained run"):
        train(dataclasses.replace(trained_run, run_dir=empty, fine_tune_encoder=True))
    untrained = str(tmp_path / "untrained")
    shutil.copytree(trained_run.run_dir, untrained)
    os.remove(os.path.join(untrained, "model.keras"))
    with pytest.raises(ValueError, match="no model.keras"):
        train(dataclasses.replace(trained_run, run_dir=untrained, fine_tune_encoder=True))
    with pytest.raises(ValueError, match="separate phases"):
        train(dataclasses.replace(trained_run, fine_tune_encoder=True, objective="scst"))
    config = fine_tune_copy(trained_run, tmp_path, "layers", fine_tune_layers=0)
    with pytest.raises(ValueError, match="--fine_tune_layers 0: this encoder's CNN has 104 layers with weights"):
        train(config)


def test_the_web_page_captions_with_a_fine_tuned_runs_encoder(fine_tuned_run, tmp_path, monkeypatch):
    pytest.importorskip("streamlit.testing.v1")
    from serving.captioner import Captioner
    from test_app import open_app

    config, _ = fine_tuned_run
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(config.run_dir, runs / "tuned")
    captioner = Captioner(str(runs / "tuned"))
    image_dir = captioner.metadata["image_dir"]
    path = os.path.join(image_dir, sorted(os.listdir(image_dir))[0])
    app = open_app(runs, monkeypatch)
    assert any("fine-tuned" in markdown.value for markdown in app.sidebar.markdown)
    with open(path, "rb") as handle:
        app.file_uploader[0].set_value(("photo.jpg", handle.read(), "image/jpeg"))
    app.run()
    assert not app.exception and not app.error
    expected = captioner.caption_features(captioner.image_features([path])[1], beam_size=1)[0]
    assert f"**{expected}**" in [markdown.value for markdown in app.markdown]
