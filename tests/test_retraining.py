"""Training again in a used run folder, and the epochs that count for patience: a fresh training starts every
later phase from its own result, only scored epochs count as not improved, and bad schedule flags are one line."""
import os
import shutil

import numpy as np
import pytest

from conftest import run_main, tiny_config
from test_pipeline import read_json
from test_scst import model_weights, scst_config
from training.history import read_history
from train import train

SCST_FLAGS = ["--scst_epochs", "1", "--scst_batch_size", "4", "--scst_samples", "3"]


def modified(run_dir: str) -> dict:
    """When each file of the run folder was last written (the feature store's files, which opening it
    rewrites, left out)."""
    return {name: os.path.getmtime(os.path.join(run_dir, name)) for name in os.listdir(run_dir)
            if not name.startswith("features_")}


def same_weights(first, second) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(first, second))


def test_a_fresh_training_moves_the_earlier_one_aside_and_later_phases_start_from_its_model(trained_run, tmp_path,
                                                                                           capsys):
    from inputs.run_folder import latest_training_state
    from package import training_commands

    run_dir = str(tmp_path / "run")
    shutil.copytree(trained_run.run_dir, run_dir)
    train(scst_config(trained_run, run_dir, scst_epochs=1))  # the earlier run: cross-entropy, then self-critical
    earlier_xe = model_weights(os.path.join(run_dir, "model_xe.keras"))
    capsys.readouterr()
    # The same command again, without --resume: the whole recipe, afresh.
    train(scst_config(trained_run, run_dir, objective="xe+scst", scst_epochs=1))
    out = capsys.readouterr().out
    previous = os.path.join(run_dir, "previous_training")
    assert [line for line in out.splitlines() if "earlier training" in line] == [
        f"{run_dir} held an earlier training: moved it into {previous} (its models, history and any later phase), "
        f"so this one starts afresh; --resume continues a run instead"]
    assert {"model.keras", "model_xe.keras", "last_epoch.keras", "training_state.json", "last_epoch_scst.keras",
            "training_state_scst.json", "config_train_scst.json", "history.csv"} <= set(os.listdir(previous))
    # Self-critical training started from this run's cross-entropy model (its only epoch), not the earlier one.
    new_xe = model_weights(os.path.join(run_dir, "model_xe.keras"))
    assert same_weights(new_xe, model_weights(os.path.join(run_dir, "last_epoch.keras")))
    assert not same_weights(new_xe, earlier_xe)
    history = read_history(os.path.join(run_dir, "history.csv"))
    assert [(row["epoch"], row["objective"]) for row in history] == [(1, "xe"), (2, "scst")]
    # A plain retrain: the run is a cross-entropy run again, and package.py reports it so.
    train(tiny_config(trained_run.data_dir, run_dir))
    assert os.path.isdir(previous + "_2") and "model_xe.keras" in os.listdir(previous + "_2")
    assert latest_training_state(run_dir)["phase"] == "xe"
    assert [phase["file"] for phase in training_commands(run_dir)] == ["config_preprocess.json", "config_train.json"]


def test_more_cross_entropy_epochs_under_a_later_phase_are_refused_and_change_nothing(trained_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(trained_run.run_dir, run_dir)
    train(scst_config(trained_run, run_dir, scst_epochs=1))
    before = modified(run_dir)
    result = run_main("train.py", "--run_dir", run_dir, "--resume", "--epochs", "3")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {run_dir}: a later phase (model_xe.keras) already continued this cross-entropy model, and more "
        f"cross-entropy epochs would leave it behind: leave out --resume to train afresh (the earlier training "
        f"moves into previous_training), or train in a new --run_dir"]
    assert modified(run_dir) == before


@pytest.fixture
def flat_dev_scores(monkeypatch):
    """A dev score that never improves after its first value: every scored epoch after it is a plateau."""
    from training.bookkeeping import DevScorer

    monkeypatch.setattr(DevScorer, "__call__", lambda self: {"dev_bleu4": 0.1, "dev_cider": 0.2})


def test_unscored_epochs_neither_use_up_patience_nor_halve_the_learning_rate(trained_run, tmp_path, flat_dev_scores,
                                                                             capsys):
    # Dev is scored after epochs 2, 4 and 6: best at 2; no better at 4 (halved) and 6 (halved, patience 2 used up).
    state = train(tiny_config(trained_run.data_dir, str(tmp_path / "run"), epochs=8, eval_every=2, patience=2,
                              lr_schedule="plateau", decay_patience=1, learning_rate=0.001))
    out = capsys.readouterr().out
    assert state["epochs_done"] == 6 and state["best_epoch"] == 2 and state["scored_since_best"] == 2
    assert out.count("learning rate halved") == 2 and state["learning_rate"] == pytest.approx(0.001 / 4)
    assert "stopping early: no better dev_cider in 2 scored epochs (best at epoch 2)" in out


def test_eval_every_beyond_patience_still_scores_dev(trained_run, tmp_path):
    # Dev is first scored after epoch 3, the last is scored too: patience 2 never runs out before a score.
    state = train(tiny_config(trained_run.data_dir, str(tmp_path / "run"), epochs=4, eval_every=3, patience=2))
    assert state["epochs_done"] == 4 and state["best"] is not None
    assert [row["epoch"] for row in read_history(os.path.join(tmp_path, "run", "history.csv"))
            if "dev_cider" in row] == [3, 4]


def test_self_critical_patience_counts_scored_epochs(trained_run, tmp_path, flat_dev_scores):
    run_dir = str(tmp_path / "run")
    shutil.copytree(trained_run.run_dir, run_dir)
    # The starting model sets the bar; epoch 1 is not scored, epoch 2 is and does not beat it: patience 1 ends there.
    state = train(scst_config(trained_run, run_dir, scst_epochs=3, scst_patience=1, eval_every=2))
    assert state["epochs_done"] == 2 and state["best_epoch"] == 0


@pytest.mark.parametrize("phase", [[], ["--objective", "scst"], ["--objective", "xe+scst"], ["--fine_tune_encoder"]])
def test_eval_every_0_is_one_line_in_every_phase_and_changes_nothing(trained_run, tmp_path, phase):
    run_dir = str(tmp_path / "run")
    shutil.copytree(trained_run.run_dir, run_dir)
    before = modified(run_dir)
    result = run_main("train.py", "--run_dir", run_dir, *phase, *SCST_FLAGS, "--eval_every", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --eval_every must be at least 1, got 0"]
    assert modified(run_dir) == before
    result = run_main("train.py", "--run_dir", run_dir, *phase, "--patience", "-1")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --patience must be 0 (off) or more, got -1"]
    assert read_json(run_dir, "training_state.json")["epochs_done"] == 2
