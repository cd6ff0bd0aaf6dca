"""Shared fixtures: a tiny dataset in the official layout; one preprocessed and trained run of it, that run
packaged and that run fine-tuned; a run of the attention decoder.

Everything uses MobileNetV2 with `--weights none` (fast, no download) and a handful of images.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)
sys.path.insert(0, os.path.join(PROJECT, "data"))

from config import Config, quiet_tensorflow, run_script  # noqa: E402

quiet_tensorflow()  # the scripts' TensorFlow settings (oneDNN on), before any test imports TensorFlow
from make_sample import make_sample  # noqa: E402

SHARED = os.path.join(os.path.dirname(PROJECT), "shared")
SHARED_FLICKR = os.path.join(SHARED, "data", "flickr8k")
MOBILENET_NOTOP = os.path.join(SHARED, "weights", "mobilenet_v2_1.0_224_from_coral_ptq_notop.weights.h5")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED_FLICKR),
                                  reason=f"the shared Flickr8k files are not at {SHARED_FLICKR}")
TINY_SPLITS = {"train": 10, "dev": 3, "test": 3}


def tiny_config(data_dir: str, run_dir: str, **overrides) -> Config:
    values = dict(data_dir=data_dir, run_dir=run_dir, encoder="mobilenet_v2", weights="none",
                  min_word_count=1, epochs=1, batch_size=8, embedding_dim=16, units=16, extract_batch_size=4)
    values.update(overrides)
    return Config(**values)


def run_cli(script: str, *arguments: str, cwd: str = PROJECT) -> subprocess.CompletedProcess:
    """`python script ARGUMENTS` in a new process: the command exactly as a user runs it."""
    return subprocess.run([sys.executable, os.path.join(PROJECT, script), *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def run_main(script: str, *arguments: str, cwd: str = PROJECT) -> subprocess.CompletedProcess:
    """The same command inside this process: the script's main under run_script, with its command line,
    exit status, stdout and stderr. It skips the seconds a new process spends importing TensorFlow, so
    tests of refused input use it; run_cli stays for the commands whose whole process matters."""
    module = importlib.import_module(os.path.splitext(script)[0])
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd, status = sys.argv, os.getcwd(), 0
    sys.argv = [script, *arguments]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_script(module.main)
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
    return subprocess.CompletedProcess([script, *arguments], status, out.getvalue(), err.getvalue())


@pytest.fixture
def tiny_dataset(tmp_path) -> str:
    """A fresh tiny dataset per test (tests may damage it)."""
    path = str(tmp_path / "tiny")
    make_sample(path, seed=3, split_sizes=TINY_SPLITS)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Config:
    """One tiny dataset, preprocessed and trained for two epochs; shared read-only by many tests."""
    from preprocess import preprocess
    from train import train

    root = tmp_path_factory.mktemp("trained")
    data_dir = str(root / "tiny")
    make_sample(data_dir, seed=3, split_sizes=TINY_SPLITS)
    config = tiny_config(data_dir, str(root / "run"), epochs=2)
    preprocess(config)
    train(config)
    return config


@pytest.fixture(scope="session")
def tiny_package(trained_run, tmp_path_factory) -> str:
    """The tiny trained run (untrained encoder) packaged as package.py packages pretrained/ (read-only)."""
    import dataclasses

    from package import package

    folder = str(tmp_path_factory.mktemp("package") / "tiny_package")
    package(dataclasses.replace(trained_run, package_dir=folder, reference_images=None))
    return folder


@pytest.fixture(scope="session")
def attention_run(tmp_path_factory) -> Config:
    """The tiny dataset with spatial features and an attention decoder trained for one epoch (read-only)."""
    from train import train

    root = tmp_path_factory.mktemp("attention")
    data_dir = str(root / "tiny")
    make_sample(data_dir, seed=3, split_sizes=TINY_SPLITS)
    config = tiny_config(data_dir, str(root / "run"), decoder="attention", attention_units=8)
    train(config)  # runs preprocess with --features spatial by itself
    return config


def fine_tune_copy(base, tmp_path, name="run", **overrides):
    """A copy of a trained tiny run, and the configuration that fine-tunes it."""
    run_dir = str(tmp_path / name)
    shutil.copytree(base.run_dir, run_dir)
    values = dict(run_dir=run_dir, fine_tune_encoder=True, fine_tune_layers=3, fine_tune_epochs=1,
                  fine_tune_batch_size=4, fine_tune_learning_rate=1e-3, encoder_learning_rate=1e-2)
    values.update(overrides)
    return dataclasses.replace(base, **values)


@pytest.fixture(scope="session")
def fine_tuned_run(trained_run, tmp_path_factory):
    """The tiny run fine-tuned for one epoch, left as an interruption before the features were written
    leaves it, then resumed for a second epoch. Returns (config, what was seen in between)."""
    import keras

    from inputs.feature_store import open_features
    from inputs.run_folder import LAST_ENCODER
    from train import train

    config = fine_tune_copy(trained_run, tmp_path_factory.mktemp("fine_tuned"))
    train(config)
    seen = {"steps_per_epoch": int(keras.models.load_model(os.path.join(config.run_dir, LAST_ENCODER))
                                   .optimizer.iterations.numpy())}
    metadata_path = os.path.join(config.run_dir, "metadata.json")
    with open(metadata_path, encoding="utf-8") as handle:
        metadata = json.load(handle)
    metadata["fine_tuned_encoder"]["features_written"] = False
    with open(metadata_path, "w", encoding="utf-8") as handle:
        json.dump(metadata, handle)
    try:
        open_features(config.run_dir, metadata)
    except ValueError as error:
        seen["unfinished"] = str(error)
    seen["state"] = train(dataclasses.replace(config, resume=True, fine_tune_epochs=2))
    return config, seen


@pytest.fixture(scope="session")
def classifier_files(tmp_path_factory):
    """Guidance files for the tiny runs (--classifier_weights W --class_names C): a class index whose first class
    is a "red circle" with a WordNet id in the cats' range (the rule names it "circle", a word of the tiny
    vocabulary), and MobileNetV2 weights with its top whose bias makes every untrained-encoder image that class."""
    import keras

    folder = tmp_path_factory.mktemp("classifier")
    index = {"0": ["n02123045", "red_circle"], **{str(i): [f"n9{i:07d}", f"thing_{i}"] for i in range(1, 1000)}}
    (folder / "classes.json").write_text(json.dumps(index), encoding="utf-8")
    keras.utils.set_random_seed(5)
    model = keras.applications.MobileNetV2(weights=None, include_top=True)
    kernel, bias = model.get_layer("predictions").get_weights()
    bias[0] = 10.0
    model.get_layer("predictions").set_weights([kernel, bias])
    weights = str(folder / "mobilenet_v2_top.weights.h5")
    model.save_weights(weights)
    return ["--classifier_weights", weights, "--class_names", str(folder / "classes.json")]
