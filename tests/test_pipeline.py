"""Preprocessing and training on a tiny dataset, through the functions and the command line, bad inputs included
(predict and evaluate: test_predict_and_evaluate.py)."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from inputs import encoders
from conftest import MOBILENET_NOTOP, TINY_SPLITS, run_cli, run_main, tiny_config
from inputs.feature_store import open_features
from preprocess import preprocess
from training.history import read_history
from train import train


def read_json(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as handle:
        return json.load(handle)


def test_preprocess_writes_the_artifacts(trained_run):
    run_dir = trained_run.run_dir
    metadata = read_json(run_dir, "metadata.json")
    assert metadata["layout"] == "flickr8k" and metadata["encoder"] == "mobilenet_v2"
    assert metadata["weights"] == "none" and metadata["feature_dim"] == 1280
    assert {s: v["with_features"] for s, v in metadata["images"].items()} == TINY_SPLITS
    assert metadata["vocabulary_size"] == len(read_json(run_dir, "vocabulary.json")["tokens"])
    features, rows = open_features(run_dir, metadata)
    assert features.shape == (16, 1280) and np.isfinite(features).all()
    assert read_json(run_dir, "config_preprocess.json")["encoder"] == "mobilenet_v2"


def test_bad_images_are_converted_or_skipped_and_listed(tiny_dataset, tmp_path):
    images = os.path.join(tiny_dataset, "Flicker8k_Dataset")
    train_names = open(os.path.join(tiny_dataset, "Flickr8k_text", "Flickr_8k.trainImages.txt")).read().split()
    os.remove(os.path.join(images, train_names[0]))
    open(os.path.join(images, train_names[1]), "wb").close()
    data = open(os.path.join(images, train_names[2]), "rb").read()
    open(os.path.join(images, train_names[2]), "wb").write(data[: len(data) // 3])
    open(os.path.join(images, train_names[3]), "w").write("not an image")
    Image.open(os.path.join(images, train_names[4])).convert("L").save(os.path.join(images, train_names[4]), "JPEG")
    Image.open(os.path.join(images, train_names[5])).convert("CMYK").save(os.path.join(images, train_names[5]), "JPEG")
    config = tiny_config(tiny_dataset, str(tmp_path / "run"))
    metadata = preprocess(config)
    assert metadata["skipped_images"] == {"missing file": [train_names[0]], "empty file": [train_names[1]],
                                          "corrupt or truncated image": [train_names[2]],
                                          "not an image": [train_names[3]]}
    assert metadata["converted_images"] == {"grayscale converted to RGB": [train_names[4]],
                                            "CMYK converted to RGB": [train_names[5]]}
    assert metadata["images"]["train"] == {"in_split": 10, "with_features": 6}
    result = run_cli("preprocess.py", "--data_dir", tiny_dataset, "--run_dir", str(tmp_path / "run"),
                     "--encoder", "mobilenet_v2", "--weights", "none", "--min_word_count", "1")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 image(s): missing file" in result.stderr
    assert "converted 1 image(s): CMYK converted to RGB" in result.stderr
    assert "12 already extracted, 4 to go" in result.stdout  # only the unusable files are tried again


def test_interrupted_preprocess_resumes_without_recomputing(tiny_dataset, tmp_path, monkeypatch):
    calls = []
    real_encode = encoders.encode_pixels

    def encode_then_interrupt(model, pixels):
        calls.append(len(pixels))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode(model, pixels)

    from inputs import extraction
    monkeypatch.setattr(extraction, "encode_pixels", encode_then_interrupt)
    config = tiny_config(tiny_dataset, str(tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):
        preprocess(config)
    assert not os.path.exists(tmp_path / "run" / "metadata.json")
    calls.clear()
    monkeypatch.setattr(extraction, "encode_pixels", real_encode)
    counted = []
    monkeypatch.setattr(extraction, "encode_pixels", lambda m, p: counted.append(len(p)) or real_encode(m, p))
    metadata = preprocess(config)
    assert sum(counted) == 16 - 8  # two batches of 4 were stored before the interruption
    resumed, rows = open_features(config.run_dir, metadata)
    fresh_config = tiny_config(tiny_dataset, str(tmp_path / "fresh"))
    fresh, fresh_rows = open_features(fresh_config.run_dir, preprocess(fresh_config))
    for name, row in fresh_rows.items():
        np.testing.assert_allclose(resumed[rows[name]], fresh[row], rtol=1e-5, atol=1e-6)


def test_bad_caption_file_is_one_line_and_writes_nothing(tiny_dataset, tmp_path):
    token_file = os.path.join(tiny_dataset, "Flickr8k_text", "Flickr8k.token.txt")
    lines = open(token_file).read().splitlines()
    lines[6] = "broken line without a tab"
    open(token_file, "w").write("\n".join(lines))
    run_dir = tmp_path / "run"
    result = run_main("preprocess.py", "--data_dir", tiny_dataset, "--run_dir", str(run_dir), "--weights", "none")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {token_file}:7: expected 'IMAGE.jpg#N<TAB>caption', "
                                                   f"got 'broken line without a tab'"]
    assert not run_dir.exists()
    open(token_file, "w").write("")
    result = run_main("preprocess.py", "--data_dir", tiny_dataset, "--run_dir", str(run_dir), "--weights", "none")
    assert result.returncode == 2 and "no captions" in result.stderr and not run_dir.exists()


def test_auto_weights_offline_stops_a_real_dataset_and_warns_for_the_sample(tiny_dataset, monkeypatch):
    def no_network(encoder, weights, seed=7, features="global"):
        if weights == "imagenet":
            raise encoders.WeightsUnavailable(encoder, "URL fetch failure: no network")
        return "untrained encoder"
    monkeypatch.setattr(encoders, "build_encoder", no_network)
    with pytest.raises(ValueError, match="--weights PATH .* --weights none"):
        encoders.open_encoder("mobilenet_v2", "auto", on_sample=False, seed=1)
    assert encoders.open_encoder("mobilenet_v2", "auto", on_sample=True, seed=1) == ("untrained encoder", "none")


def test_untrained_encoder_is_reproducible_and_weight_files_are_checked(tmp_path):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    first = encoders.encode_pixels(encoders.build_encoder("mobilenet_v2", "none", seed=3), pixels)
    second = encoders.encode_pixels(encoders.build_encoder("mobilenet_v2", "none", seed=3), pixels)
    np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="not 'auto', 'imagenet', 'none' or an existing weights file"):
        encoders.build_encoder("mobilenet_v2", str(tmp_path / "absent.weights.h5"))


@pytest.mark.skipif(not os.path.exists(MOBILENET_NOTOP), reason="the shared MobileNetV2 weights are absent")
def test_local_imagenet_weights_file_loads_and_is_used():
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    trained = encoders.encode_pixels(encoders.build_encoder("mobilenet_v2", MOBILENET_NOTOP), pixels)
    untrained = encoders.encode_pixels(encoders.build_encoder("mobilenet_v2", "none"), pixels)
    assert trained.shape == (2, 1280) and not np.allclose(trained, untrained)
    with pytest.raises(ValueError, match="does not fit VGG16"):
        encoders.build_encoder("vgg16", MOBILENET_NOTOP)


def test_train_keeps_best_model_by_dev_cider_and_resumes(trained_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(trained_run.run_dir, run_dir)
    state = read_json(run_dir, "training_state.json")
    assert state["epochs_done"] == 2 and state["monitor"] == "cider"
    assert os.path.exists(os.path.join(run_dir, "model.keras"))
    history = read_history(os.path.join(run_dir, "history.csv"))
    assert [row["epoch"] for row in history] == [1, 2]
    assert all({"loss", "val_loss", "dev_bleu4", "dev_cider"} <= set(row) for row in history)
    best_row = max(history, key=lambda row: row["dev_cider"])  # ties: the first, as training keeps it
    assert state["best"] == pytest.approx(best_row["dev_cider"]) and state["best_epoch"] == best_row["epoch"]
    with Image.open(os.path.join(run_dir, "training_curves.png")) as curves:
        curves.verify()  # a complete, valid PNG
        assert curves.format == "PNG" and curves.size == (1100, 440)
    with pytest.raises(ValueError, match="--monitor cider"):
        train(tiny_config(trained_run.data_dir, run_dir, epochs=3, resume=True, monitor="val_loss"))
    resumed = train(tiny_config(trained_run.data_dir, run_dir, epochs=3, resume=True, eval_every=2))
    assert resumed["epochs_done"] == 3
    history = read_history(os.path.join(run_dir, "history.csv"))
    # Epoch 3 is not a multiple of --eval_every 2 but is the last one, so it is scored too.
    assert [row["epoch"] for row in history] == [1, 2, 3] and "dev_cider" in history[-1]


def test_train_monitor_val_loss_keeps_the_lowest_dev_loss(trained_run, tmp_path):
    run_dir = str(tmp_path / "run")
    state = train(tiny_config(trained_run.data_dir, run_dir, epochs=3, monitor="val_loss", eval_every=2))
    history = read_history(os.path.join(run_dir, "history.csv"))
    assert "dev_cider" not in history[0] and "dev_cider" in history[1]
    best_row = min(history, key=lambda row: row["val_loss"])
    assert state["best_epoch"] == best_row["epoch"] and state["best"] == pytest.approx(best_row["val_loss"])


def test_learning_rate_halves_on_a_plateau_and_resume_keeps_it(trained_run, tmp_path, monkeypatch, capsys):
    import train as train_module

    # A dev score that never improves after epoch 1: a plateau from the start.
    monkeypatch.setattr(train_module.DevScorer, "__call__", lambda self: {"dev_bleu4": 0.1, "dev_cider": 0.2})
    run_dir = str(tmp_path / "run")
    state = train(tiny_config(trained_run.data_dir, run_dir, epochs=3, decay_patience=1, learning_rate=0.001,
                              lr_schedule="plateau"))
    assert capsys.readouterr().out.count("learning rate halved") == 2
    assert state["best_epoch"] == 1 and state["learning_rate"] == pytest.approx(0.001 / 4)
    resumed = train(tiny_config(trained_run.data_dir, run_dir, epochs=4, decay_patience=1, learning_rate=0.001,
                                resume=True, lr_schedule="plateau"))
    assert resumed["learning_rate"] == pytest.approx(0.001 / 8)


@pytest.mark.slow
def test_end_to_end_commands_with_a_test_image_missing(tiny_dataset, tmp_path):
    """train.py (which runs preprocess first), predict.py and evaluate.py, as a user runs them."""
    test_names = open(os.path.join(tiny_dataset, "Flickr8k_text", "Flickr_8k.testImages.txt")).read().split()
    os.remove(os.path.join(tiny_dataset, "Flicker8k_Dataset", test_names[0]))
    run_dir = str(tmp_path / "run")
    common = ["--data_dir", tiny_dataset, "--run_dir", run_dir]
    trained = run_cli("train.py", *common, "--encoder", "mobilenet_v2", "--weights", "none", "--epochs", "1",
                      "--min_word_count", "1", "--units", "16", "--embedding_dim", "16")
    assert trained.returncode == 0, trained.stderr
    assert "running preprocess first" in trained.stdout and "epoch 1/1" in trained.stdout
    assert os.path.exists(os.path.join(run_dir, "model.keras"))
    image = os.path.join(tiny_dataset, "Flicker8k_Dataset", test_names[1])
    predicted = run_cli("predict.py", *common, "--image_path", image, "--beam_size", "3")
    assert predicted.returncode == 0 and predicted.stdout.strip(), predicted.stderr
    evaluated = run_cli("evaluate.py", *common)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "missing 1 of 3 test images: missing file" in evaluated.stderr
    report = read_json(run_dir, "evaluation_test_beam3.json")
    assert report["images_scored"] == 2 and report["missing_images"] == [test_names[0]]
    assert report["weights"] == "none"


def test_sharded_extraction_merges_into_the_same_features(tiny_dataset, tmp_path, capsys):
    direct_dir, sharded_dir = str(tmp_path / "direct"), str(tmp_path / "sharded")
    preprocess(tiny_config(tiny_dataset, direct_dir))
    parts = [preprocess(tiny_config(tiny_dataset, sharded_dir, shard=f"{index}/2")) for index in (0, 1)]
    assert [part["images"] for part in parts] == [8, 8]
    assert not os.path.exists(os.path.join(sharded_dir, "metadata.json"))  # a shard is not a finished run
    capsys.readouterr()
    metadata = preprocess(tiny_config(tiny_dataset, sharded_dir))
    out = capsys.readouterr().out
    assert "merged 8 images' features from features_mobilenet_v2.shard0of2" in out and "16 already extracted, 0 to go" in out
    assert not [name for name in os.listdir(sharded_dir) if ".shard" in name]  # merged shards are removed
    sharded, sharded_rows = open_features(sharded_dir, metadata)
    direct, direct_rows = open_features(direct_dir, read_json(direct_dir, "metadata.json"))
    assert set(sharded_rows) == set(direct_rows)
    for name in direct_rows:
        np.testing.assert_allclose(sharded[sharded_rows[name]], direct[direct_rows[name]], rtol=1e-4, atol=1e-6)


def test_bad_shard_values_and_foreign_shards_are_refused(tiny_dataset, tmp_path):
    for value in ("2/2", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="expected I/N"):
            preprocess(tiny_config(tiny_dataset, str(tmp_path / "run"), shard=value))
    run_dir = str(tmp_path / "run")
    preprocess(tiny_config(tiny_dataset, run_dir, shard="0/2", encoder_seed=99))  # another untrained encoder
    with pytest.raises(ValueError, match="other encoder settings"):
        preprocess(tiny_config(tiny_dataset, run_dir))
    with pytest.raises(ValueError, match="--shard is for preprocess.py"):
        train(tiny_config(tiny_dataset, run_dir, shard="0/2"))


def test_preprocess_reads_your_own_captions_file(tiny_dataset, tmp_path):
    """--captions_file with --images_dir: a CSV saved on Windows (BOM, CRLF) with a split column."""
    from data_loader import load_dataset

    official = load_dataset(tiny_dataset)
    rows = ["image,caption,split"] + [f'{name},"{caption}",{split}' for split, names in official.splits.items()
                                      for name in names for caption in official.captions[name]]
    captions_file = tmp_path / "my_pictures.csv"
    captions_file.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    images_dir = os.path.join(tiny_dataset, "Flicker8k_Dataset")
    config = tiny_config("", "", captions_file=str(captions_file), images_dir=images_dir)
    run_dir = config.resolved_run_dir()
    assert run_dir.endswith(os.path.join("runs", "my_pictures"))
    config = tiny_config("", str(tmp_path / "run"), captions_file=str(captions_file), images_dir=images_dir)
    preprocess(config)
    metadata = read_json(str(tmp_path / "run"), "metadata.json")
    assert metadata["layout"] == "table" and metadata["captions_file"] == str(captions_file)
    assert read_json(str(tmp_path / "run"), "captions.json")["train"] == \
           {name: official.captions[name] for name in official.splits["train"]}
    missing = run_main("preprocess.py", "--captions_file", str(captions_file), "--run_dir", str(tmp_path / "r2"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"error: --captions_file {captions_file}: give --images_dir, "
                                                   f"the folder its image names are in"]


def test_training_curves_shade_the_self_critical_epochs_and_mark_the_kept_one(tmp_path):
    from scoring.report import plot_training_curves

    cross_entropy = [{"epoch": float(epoch), "objective": "xe", "loss": 4.0 - epoch / 4, "val_loss": 3.5 - epoch / 8,
                      "dev_bleu4": 0.1 + epoch / 100, "dev_cider": 0.3 + epoch / 50} for epoch in range(1, 6)]
    self_critical = [{"epoch": float(epoch), "objective": "scst", "scst_loss": -0.05, "reward": 0.4 + epoch / 50,
                      "dev_bleu4": 0.16, "dev_cider": 0.42 + epoch / 100} for epoch in range(6, 10)]
    orange = np.array([255, 239, 225])  # matplotlib's tab:orange at alpha 0.12 over white
    green = np.array([229, 243, 229])  # tab:green at alpha 0.12 over white

    def shaded_pixels(history, name, shading=orange):
        path = str(tmp_path / name)
        plot_training_curves(history, path, kept_epoch=8)
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.size == (1100, 440)
            pixels = np.asarray(picture.convert("RGB"), dtype=int)
        return int((np.abs(pixels - shading).max(axis=-1) <= 1).sum())

    assert shaded_pixels(cross_entropy, "xe.png") < 500  # a few edge pixels of the orange dev-loss line
    assert shaded_pixels(cross_entropy + self_critical, "both.png") > 20_000  # both panels' self-critical bands
    fine_tune = [{**row, "objective": "fine_tune"} for row in self_critical]
    assert shaded_pixels(cross_entropy + self_critical, "no_green.png", green) < 500
    assert shaded_pixels(cross_entropy + fine_tune, "fine_tune.png", green) > 20_000


def test_litert_extraction_stores_the_features_tensorflow_stores(trained_run, tmp_path):
    """`--extract_with litert` runs the same encoder converted to LiteRT: same images, same rows, features
    equal to TensorFlow's (the trained run's) up to float rounding; a batch shorter than the others included."""
    from serving.encoder_check import cosine_similarities

    run_dir = str(tmp_path / "litert")
    result = run_cli("preprocess.py", "--data_dir", trained_run.data_dir, "--run_dir", run_dir, "--encoder",
                     "mobilenet_v2", "--weights", "none", "--min_word_count", "1", "--extract_batch_size", "5",
                     "--extract_with", "litert")
    assert result.returncode == 0, result.stderr
    assert "TensorSpec" not in result.stdout + result.stderr  # the conversion's listing is not the user's business
    metadata = read_json(run_dir, "metadata.json")
    assert read_json(run_dir, "config_preprocess.json")["extract_with"] == "litert"
    lite_features, lite_rows = open_features(run_dir, metadata)
    tf_features, tf_rows = open_features(trained_run.run_dir, read_json(trained_run.run_dir, "metadata.json"))
    assert sorted(lite_rows) == sorted(tf_rows) and len(lite_rows) == 16
    names = sorted(tf_rows)
    lite = np.stack([lite_features[lite_rows[name]] for name in names])
    tensorflow = np.stack([tf_features[tf_rows[name]] for name in names])
    assert cosine_similarities(lite, tensorflow).min() > 0.9999
    # The images differ enough that features in the wrong rows would fail the bound above.
    assert cosine_similarities(lite, np.roll(tensorflow, 1, axis=0)).min() < 0.99


@pytest.mark.slow
def test_litert_extraction_skips_bad_images_and_resumes(tiny_dataset, tmp_path):
    images = os.path.join(tiny_dataset, "Flicker8k_Dataset")
    train_names = open(os.path.join(tiny_dataset, "Flickr8k_text", "Flickr_8k.trainImages.txt")).read().split()
    os.remove(os.path.join(images, train_names[0]))
    open(os.path.join(images, train_names[1]), "w").write("not an image")
    arguments = ("preprocess.py", "--data_dir", tiny_dataset, "--run_dir", str(tmp_path / "run"), "--encoder",
                 "mobilenet_v2", "--weights", "none", "--min_word_count", "1", "--extract_with", "litert")
    first = run_cli(*arguments)
    assert first.returncode == 0, first.stderr
    assert "skipped 1 image(s): missing file" in first.stderr and "skipped 1 image(s): not an image" in first.stderr
    assert read_json(str(tmp_path / "run"), "metadata.json")["images"]["train"] == {"in_split": 10, "with_features": 8}
    again = run_cli(*arguments)
    assert again.returncode == 0, again.stderr
    assert "14 already extracted, 2 to go" in again.stdout  # the features written before are kept


def test_an_extraction_runtime_that_cannot_load_is_refused_in_one_line(tiny_dataset, tmp_path, monkeypatch):
    # As on a machine without ai-edge-litert: importing it fails.
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    run_dir = str(tmp_path / "run")
    for script in ("preprocess.py", "train.py"):
        result = run_main(script, "--data_dir", tiny_dataset, "--run_dir", run_dir, "--weights", "none",
                          "--encoder", "mobilenet_v2", "--extract_with", "litert")
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --extract_with litert needs the ai-edge-litert "
                                                       "package"), result.stderr
        assert "leave out --extract_with" in lines[0] and not os.path.exists(run_dir)  # nothing written
