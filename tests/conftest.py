"""Shared fixtures: a tiny dataset in the official layout, and one preprocessed + trained run of it.

Everything uses MobileNetV2 with `--weights none` (fast, no download) and a handful of images.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
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
