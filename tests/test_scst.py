"""Self-critical training: the update goes the right way, the phase keeps both models, resumes,
works for both decoders, and refuses bad input with one line."""
import os
import shutil

import numpy as np
import pytest

from conftest import run_main, tiny_config
from test_pipeline import read_json
from training.history import read_history
from train import train


def scst_config(base, run_dir, **overrides):
    values = dict(objective="scst", scst_epochs=2, scst_patience=0, scst_batch_size=4, scst_samples=3,
                  scst_learning_rate=1e-3)
    values.update(overrides)
    return tiny_config(base.data_dir, run_dir, decoder=base.decoder, attention_units=base.attention_units,
                       features=base.features, **values)


def model_weights(path):
    import keras

    return keras.models.load_model(path, compile=False).get_weights()


def test_advantages_against_the_mean_of_the_other_samples_and_against_greedy():
    from training.scst import advantages_of

    rewards = np.array([1.0, 2.0, 3.0, 0.0, 0.0, 3.0])
    np.testing.assert_allclose(advantages_of(rewards, 3, "mean"), [1 - 2.5, 2 - 2, 3 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0])
    np.testing.assert_allclose(advantages_of(rewards, 3, "greedy", [2.0, 1.0]), [-1, 0, 1, -1, -1, 2])


def open_policy_parts(run, banned_endings=False):
    """The tiny run's model (compiled for self-critical steps), its features and its sampler."""
    import keras

    from decoders.decoding import CaptionDecoder, bad_ending_ids
    from inputs.feature_store import open_features
    from inputs.run_folder import load_run
    from model import compile_model

    metadata, _, vocabulary = load_run(run.run_dir)
    features, _ = open_features(run.run_dir, metadata)
    model = keras.models.load_model(os.path.join(run.run_dir, "model.keras"), compile=False)
    compile_model(model, 0.01)
    banned = bad_ending_ids(vocabulary) if banned_endings else ()
    return model, features, CaptionDecoder(model, metadata["max_caption_length"], 0, banned), banned


def test_a_positive_advantage_makes_the_sample_more_likely(trained_run):
    import tensorflow as tf

    from inputs.vocabulary import START_ID
    from training.scst import PolicyStep

    model, features, sampler, _ = open_policy_parts(trained_run)
    image_features = np.asarray(features[[0, 0]], np.float32)
    samples = sampler.sample(image_features[:1], 2, seed=(0, 0))
    assert (samples[0] != samples[1]).any()  # the seed is fixed: two different captions to push apart

    def log_probability(row):
        """The sample's log-probability under the policy: the model renormalised over writable words."""
        tokens = np.concatenate([[START_ID], samples[row]])
        probabilities = model([image_features[:1], tokens[None, :-1]], training=False).numpy()[0]
        real = samples[row] != 0
        writable = sampler.writable[np.minimum(np.arange(len(samples[row])), 1)]
        policy = probabilities / (probabilities * writable).sum(axis=1, keepdims=True)
        return float(np.log(policy[np.arange(len(samples[row])), samples[row]][real]).sum())

    before = [log_probability(0), log_probability(1)]
    step = PolicyStep(model, sampler)
    advantages = np.array([1.0, -1.0], np.float32)
    words = int((samples != 0).sum())
    # The step's loss is -sum(advantage * log-probability of each word) / words, before its update.
    expected_loss = -(advantages[0] * before[0] + advantages[1] * before[1]) / words
    assert step(image_features, samples, advantages) == pytest.approx(expected_loss, rel=1e-4, abs=1e-5)
    for _ in range(2):
        step(image_features, samples, advantages)
    after = [log_probability(0), log_probability(1)]
    assert after[0] > before[0] and after[1] < before[1]
    assert tf.math.is_finite(after[0])


def test_the_policy_gradient_uses_the_distribution_the_samples_were_drawn_from(trained_run):
    """With --block_bad_endings the sampler never draws <end> after "a", "on", ...: the step's
    log-probabilities renormalise over the same words, equal to the sampler's, teacher-forced."""
    from training.scst import PolicyStep

    model, features, sampler, banned = open_policy_parts(trained_run, banned_endings=True)
    image_features = np.repeat(np.asarray(features[:6], np.float32), 4, axis=0)
    samples = sampler.sample(image_features[::4], 4, seed=(3, 1))
    real = samples != 0
    drawn = sampler.sampled_log_probabilities(image_features, samples)[real]
    used = PolicyStep(model, sampler).log_probabilities(image_features, samples).numpy()
    np.testing.assert_allclose(used, drawn, rtol=0, atol=2e-5)
    # The rule was at work: the samples hold banned words before other words, and the distribution renormalised
    # over the writable words only (what the step used before) gives those words other log-probabilities.
    assert np.isin(samples[:, :-1][real[:, 1:]], banned).any()
    writable_only = open_policy_parts(trained_run)[2].sampled_log_probabilities(image_features, samples)[real]
    assert np.abs(writable_only - drawn).max() > 1e-3


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_scst_continues_a_run_keeps_both_models_and_resumes(trained_run, tmp_path, baseline):
    run_dir = str(tmp_path / "run")
    shutil.copytree(trained_run.run_dir, run_dir)
    xe_weights = model_weights(os.path.join(run_dir, "model.keras"))
    state = train(scst_config(trained_run, run_dir, scst_epochs=1, scst_baseline=baseline))
    assert state["epochs_done"] == 1 and state["monitor"] == "cider"
    first_epoch = model_weights(os.path.join(run_dir, "last_epoch_scst.keras"))
    for weight, kept in zip(model_weights(os.path.join(run_dir, "model_xe.keras")), xe_weights):
        np.testing.assert_array_equal(weight, kept)
    assert os.path.exists(os.path.join(run_dir, "last_epoch_scst.keras"))
    assert read_json(run_dir, "config_train_scst.json")["scst_baseline"] == baseline
    resumed = train(scst_config(trained_run, run_dir, scst_epochs=2, resume=True, scst_baseline=baseline))
    assert resumed["epochs_done"] == 2
    history = read_history(os.path.join(run_dir, "history.csv"))
    assert [(row["epoch"], row["objective"]) for row in history] == [(1, "xe"), (2, "xe"), (3, "scst"), (4, "scst")]
    assert all({"scst_loss", "reward", "dev_cider"} <= set(row) for row in history[2:])
    assert all(0.0 <= row["reward"] for row in history[2:])
    # model.keras is the XE model unless a self-critical epoch beat its dev CIDEr-D.
    best = model_weights(os.path.join(run_dir, "model.keras"))
    last = model_weights(os.path.join(run_dir, "last_epoch_scst.keras"))
    kept = {0: xe_weights, 1: first_epoch, 2: last}[resumed["best_epoch"]]  # every case checked, whichever it is
    assert all(np.array_equal(a, b) for a, b in zip(best, kept))
    assert not all(np.array_equal(a, b) for a, b in zip(last, xe_weights))  # the phase did change the model
    result = run_main("predict.py", "--run_dir", run_dir, "--image_path",
                      os.path.join(trained_run.data_dir, "Flicker8k_Dataset"))
    assert result.returncode == 0, result.stderr
    done = train(scst_config(trained_run, run_dir, scst_epochs=2, resume=True))
    assert done["epochs_done"] == 2  # nothing left to do


def test_scst_with_the_attention_decoder(attention_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(attention_run.run_dir, run_dir)
    state = train(scst_config(attention_run, run_dir, scst_epochs=1, block_bad_endings=True))
    assert state["epochs_done"] == 1
    assert read_json(run_dir, "config_train_scst.json")["features"] == "spatial"  # the run's, not the flag's
    result = run_main("evaluate.py", "--run_dir", run_dir, "--data_dir", attention_run.data_dir, "--split", "dev",
                      "--model_file", "model_xe.keras", "--beam_size", "1")
    assert result.returncode == 0, result.stderr
    assert os.path.exists(os.path.join(run_dir, "evaluation_dev_model_xe.json"))


def test_scst_bad_input_is_one_line(trained_run, tmp_path):
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    result = run_main("train.py", "--objective", "scst", "--run_dir", empty, "--data_dir", trained_run.data_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {empty}: no trained model (model.keras); self-critical training continues a run trained with "
        f"cross-entropy: run python train.py --run_dir {empty} first"]
    result = run_main("train.py", "--objective", "scst", "--run_dir", trained_run.run_dir, "--scst_samples", "1")
    assert result.returncode == 2 and "needs at least 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # --features_from names where a new run copies its features; a later phase cannot swap them.
    elsewhere = str(tmp_path / "elsewhere")
    for phase in (["--objective", "scst"], ["--fine_tune_encoder"]):
        result = run_main("train.py", *phase, "--run_dir", trained_run.run_dir, "--features_from", elsewhere)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"--features_from {elsewhere}: " in result.stderr and "leave out --features_from" in result.stderr


def read_scalars(folder):
    """{tag: {step: value}} from the TensorBoard event files in `folder`."""
    import glob

    import tensorflow as tf

    scalars = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


def test_tensorboard_logs_hold_the_dev_metrics_of_both_phases(trained_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(trained_run.run_dir, run_dir)
    train(tiny_config(trained_run.data_dir, run_dir, epochs=3, resume=True, tensorboard=True))
    train(scst_config(trained_run, run_dir, scst_epochs=1, tensorboard=True, lr_schedule="plateau"))
    history = {int(row["epoch"]): row for row in read_history(os.path.join(run_dir, "history.csv"))}
    scalars = read_scalars(os.path.join(run_dir, "tensorboard", "epochs"))
    assert set(scalars["dev_cider"]) == {3, 4} and set(scalars["reward"]) == {4} and set(scalars["loss"]) == {3}
    for step in (3, 4):
        assert scalars["dev_cider"][step] == pytest.approx(history[step]["dev_cider"], rel=1e-6)
        assert scalars["dev_bleu4"][step] == pytest.approx(history[step]["dev_bleu4"], rel=1e-6)
    assert scalars["learning_rate"][4] == pytest.approx(1e-3)  # the self-critical phase's own rate
    assert os.listdir(os.path.join(run_dir, "tensorboard", "train"))  # Keras's own callback, during fit


def test_a_history_written_before_the_objective_column_is_rewritten_with_it(tmp_path):
    from training.history import HISTORY_COLUMNS, append_history

    path = str(tmp_path / "history.csv")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("epoch,loss,accuracy,val_loss,val_accuracy,dev_bleu4,dev_cider,seconds\n"
                     "1,4.0,0.2,3.3,0.3,0.08,0.27,223.1\n2,3.1,0.3,3.0,0.36,0.13,0.33,276.1\n")
    append_history(path, {"epoch": 3, "objective": "scst", "scst_loss": -0.07, "reward": 0.38, "dev_cider": 0.43})
    with open(path, encoding="utf-8") as handle:
        assert handle.readline().strip() == ",".join(HISTORY_COLUMNS)
    rows = read_history(path)
    assert [(row["epoch"], row["objective"]) for row in rows] == [(1, "xe"), (2, "xe"), (3, "scst")]
    assert rows[1]["dev_cider"] == 0.33 and rows[2]["reward"] == 0.38 and "loss" not in rows[2]


def test_an_interrupted_and_resumed_phase_trains_what_an_uninterrupted_one_trains(trained_run, tmp_path, monkeypatch):
    """Each epoch's batch order and samples come from (--seed, epoch), the cosine schedule from the
    optimizer's step count saved with the checkpoint: resuming repeats the uninterrupted run exactly."""
    import dataclasses

    from training import scst

    runs = {name: str(tmp_path / name) for name in ("whole", "resumed")}
    for run_dir in runs.values():
        shutil.copytree(trained_run.run_dir, run_dir)
    train(scst_config(trained_run, runs["whole"], scst_epochs=2))
    config = scst_config(trained_run, runs["resumed"], scst_epochs=2)
    uninterrupted_epoch, epochs_begun = scst.scst_epoch, []

    def interrupted_in_the_second_epoch(*arguments, **keywords):
        epochs_begun.append(1)
        if len(epochs_begun) == 2:
            raise KeyboardInterrupt  # as Ctrl-C would, half-way through
        return uninterrupted_epoch(*arguments, **keywords)

    monkeypatch.setattr(scst, "scst_epoch", interrupted_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(scst, "scst_epoch", uninterrupted_epoch)
    assert read_json(runs["resumed"], "training_state_scst.json")["epochs_done"] == 1
    train(dataclasses.replace(config, resume=True))
    for name in ("last_epoch_scst.keras", "model.keras"):
        whole, resumed = (model_weights(os.path.join(runs[run], name)) for run in ("whole", "resumed"))
        for weight, same in zip(whole, resumed):
            np.testing.assert_array_equal(weight, same)  # equal bit for bit, not within a tolerance
    rows = {run: read_history(os.path.join(run_dir, "history.csv"))[2:] for run, run_dir in runs.items()}
    for row, same in zip(rows["whole"], rows["resumed"]):
        assert {key: row[key] for key in ("epoch", "scst_loss", "reward", "dev_cider")} == \
               {key: same[key] for key in ("epoch", "scst_loss", "reward", "dev_cider")}
