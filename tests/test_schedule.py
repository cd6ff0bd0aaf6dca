"""The fast recipe's pieces: the cosine learning-rate schedule (warm-up, decay, resumed on the same curve,
no plateau halving under it) and `--objective xe+scst`, both phases in one command."""
import math
import os

import pytest

from conftest import run_main, tiny_config
from test_pipeline import read_json
from training.history import read_history
from training.schedule import cosine_learning_rate


def test_the_rate_warms_up_linearly_then_decays_along_a_cosine_to_zero():
    rates = [cosine_learning_rate(step, 100, 10, 0.002) for step in range(100)]
    assert rates[:10] == pytest.approx([0.002 * (step + 1) / 10 for step in range(10)])
    assert rates[10] == pytest.approx(0.002) and all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[55] == pytest.approx(0.001, rel=0.05) and cosine_learning_rate(100, 100, 10, 0.002) == 0.0
    assert cosine_learning_rate(0, 10, 0, 0.5) == 0.5  # no warm-up: the peak at once


def steps_per_epoch(config):
    """Training batches per epoch of the tiny run (its 50 captions)."""
    return math.ceil(50 / config.batch_size)


def test_cross_entropy_follows_the_cosine_and_a_resumed_run_continues_it(trained_run, tmp_path, monkeypatch,
                                                                         capsys):
    import train as train_module

    # A dev score that never improves: under --lr_schedule plateau this would halve the rate every epoch.
    monkeypatch.setattr(train_module.DevScorer, "__call__", lambda self: {"dev_bleu4": 0.1, "dev_cider": 0.2})
    flags = dict(lr_schedule="cosine", warmup_epochs=1.0, learning_rate=0.002, decay_patience=1, patience=0)
    whole = train_module.train(tiny_config(trained_run.data_dir, str(tmp_path / "whole"), epochs=3, **flags))
    config = tiny_config(trained_run.data_dir, str(tmp_path / "whole"), epochs=3, **flags)
    steps = steps_per_epoch(config)
    # The rate saved after the last epoch is the one of its last step.
    assert whole["learning_rate"] == pytest.approx(cosine_learning_rate(3 * steps - 1, 3 * steps, steps, 0.002))
    assert "learning rate halved" not in capsys.readouterr().out
    part = str(tmp_path / "part")
    train_module.train(tiny_config(trained_run.data_dir, part, epochs=2, **flags))
    resumed = train_module.train(tiny_config(trained_run.data_dir, part, epochs=3, resume=True, **flags))
    assert resumed["learning_rate"] == pytest.approx(whole["learning_rate"])


def test_xe_then_scst_in_one_command(trained_run, tmp_path):
    run_dir = str(tmp_path / "recipe")
    result = run_main("train.py", "--data_dir", trained_run.data_dir, "--run_dir", run_dir, "--encoder",
                      "mobilenet_v2", "--weights", "none", "--min_word_count", "1", "--embedding_dim", "16",
                      "--units", "16", "--batch_size", "8", "--epochs", "2", "--objective", "xe+scst",
                      "--scst_epochs", "2", "--scst_batch_size", "4", "--scst_samples", "3", "--lr_schedule",
                      "cosine", "--scst_learning_rate", "1e-3")
    assert result.returncode == 0, result.stderr
    rows = read_history(os.path.join(run_dir, "history.csv"))
    assert [(row["epoch"], row["objective"]) for row in rows] == [(1, "xe"), (2, "xe"), (3, "scst"), (4, "scst")]
    assert os.path.exists(os.path.join(run_dir, "model_xe.keras"))
    scst = read_json(run_dir, "training_state_scst.json")
    assert scst["epochs_done"] == 2 and "(cosine schedule)" in result.stdout
    steps = 2  # 10 training images, 4 per batch
    assert scst["learning_rate"] == pytest.approx(cosine_learning_rate(2 * steps - 1, 2 * steps, 0, 1e-3))


def test_xe_then_scst_with_a_strategy_is_refused_before_anything_is_written(trained_run, tmp_path):
    run_dir = str(tmp_path / "refused")
    result = run_main("train.py", "--data_dir", trained_run.data_dir, "--run_dir", run_dir, "--weights", "none",
                      "--objective", "xe+scst", "--strategy", "mirrored")
    assert result.returncode == 2 and "runs on one machine" in result.stderr and not os.path.exists(run_dir)
