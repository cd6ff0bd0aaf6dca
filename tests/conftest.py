"""Shared fixtures: a tiny dataset in the official layout, and one preprocessed + trained run of it.

Everything uses MobileNetV2 with `--weights none` (fast, no download) and a handful of images.
"""
from __future__ import annotations

import os
import sys

import pytest

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)
sys.path.insert(0, os.path.join(PROJECT, "data"))

from config import Config, quiet_tensorflow  # noqa: E402

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
