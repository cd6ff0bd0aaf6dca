"""tf.distribute training: two replicas on one machine, two worker processes on 127.0.0.1, resume,
chief-only writes, and the bad inputs (no TF_CONFIG, a batch that does not split, diverged folders)."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from serving.captioner import Captioner
from conftest import PROJECT, tiny_config
from data_loader import caption_batches
from training.history import read_history
from train import train

TRAIN = os.path.join(PROJECT, "train.py")
TWO_CPUS = os.path.join(PROJECT, "tests", "two_logical_cpus.py")
RUN_FILES = ("captions.json", "metadata.json", "vocabulary.json", "features_mobilenet_v2.bin",
             "features_mobilenet_v2.index", "features_mobilenet_v2.json")
# Fast enough learning that the loss moves well away from chance within a few tiny epochs.
LEARNING = ["--learning_rate", "0.01", "--batch_size", "8", "--embedding_dim", "16", "--units", "16",
            "--min_word_count", "1", "--encoder", "mobilenet_v2", "--weights", "none"]


def fresh_run(source_run: str, destination: str) -> str:
    """A run folder with the source's features and vocabulary, and nothing trained yet."""
    os.makedirs(destination)
    for name in os.listdir(source_run):
        if name in RUN_FILES or name.startswith("features_"):
            shutil.copy(os.path.join(source_run, name), destination)
    return destination


def free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def run_workers(data_dir: str, run_dirs: list, *arguments: str) -> list:
    """train.py --strategy multi_worker in one process per run folder, all on 127.0.0.1."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(len(run_dirs))]
    processes = []
    for index, run_dir in enumerate(run_dirs):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        environment = dict(os.environ, TF_CONFIG=json.dumps(tf_config))
        processes.append(subprocess.Popen(
            [sys.executable, TRAIN, "--data_dir", data_dir, "--run_dir", run_dir, "--strategy", "multi_worker",
             *LEARNING, *arguments], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append((process.returncode, out, err))
    return results


def final_loss(run_dir: str) -> float:
    return read_history(os.path.join(run_dir, "history.csv"))[-1]["loss"]


def test_shards_of_every_shuffled_epoch_are_disjoint_and_cover_it():
    # Each image's feature is its own row number, so the batches show which captions a worker read.
    features = np.arange(40, dtype=np.float32)[:, None]
    tokens = np.tile(np.array([[1, 5, 2, 0]], np.int32), (40, 1))
    shards = [caption_batches(features, np.arange(40), tokens, 4, True, 7, shard=(index, 2), drop_remainder=True)
              for index in range(2)]
    epochs = []
    for _ in range(2):
        read = [[int(row) for inputs, _, _ in shard for row in inputs["image_features"][:, 0]] for shard in shards]
        assert not set(read[0]) & set(read[1]) and sorted(read[0] + read[1]) == list(range(40))
        epochs.append(read[0])
    assert epochs[0] != epochs[1]  # reshuffled each epoch, identically on every worker


@pytest.mark.slow
def test_two_workers_train_together_write_only_on_the_chief_and_match_one_worker(trained_run, tmp_path):
    single = fresh_run(trained_run.run_dir, str(tmp_path / "single"))
    result = subprocess.run([sys.executable, TRAIN, "--data_dir", trained_run.data_dir, "--run_dir", single,
                             "--epochs", "4", *LEARNING], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # Two machines, each with its own copy of the run folder.
    chief, other = (fresh_run(trained_run.run_dir, str(tmp_path / name)) for name in ("chief", "other"))
    results = run_workers(trained_run.data_dir, [chief, other], "--epochs", "4")
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-2000:] + results[1][2][-2000:]
    assert "2 replica(s) on 2 worker(s)" in results[0][1] and "follows the chief" in results[1][1]
    # Every worker logs the same numbers: the losses are summed across workers each step.
    epoch_lines = [[line for line in out.splitlines() if line.startswith("epoch")] for _, out, _ in results]
    assert len(epoch_lines[0]) == 4 and [line[:60] for line in epoch_lines[0]] == [line[:60] for line in epoch_lines[1]]
    assert {"model.keras", "last_epoch.keras", "history.csv", "training_state.json"} <= set(os.listdir(chief))
    assert sorted(os.listdir(other)) == sorted(RUN_FILES)  # the chief alone writes
    # The same seed and the same global batch: a comparable loss, well below where both started.
    first = read_history(os.path.join(single, "history.csv"))[0]["loss"]
    assert final_loss(chief) < first - 0.3 and final_loss(single) < first - 0.3
    assert final_loss(chief) == pytest.approx(final_loss(single), abs=0.15)
    captioner = Captioner(chief)
    images = [os.path.join(trained_run.data_dir, "Flicker8k_Dataset", name) for name in
              sorted(os.listdir(os.path.join(trained_run.data_dir, "Flicker8k_Dataset")))[:2]]
    captions, _, errors, _ = captioner.caption_files(images)
    assert not errors and all(isinstance(caption, str) and caption for caption in captions.values())

    # Resuming needs the chief's state on every worker: a stale copy is refused by both, then works.
    results = run_workers(trained_run.data_dir, [chief, other], "--epochs", "5", "--resume")
    assert [code for code, _, _ in results] == [2, 2]
    assert all("disagree on how many epochs" in err for _, _, err in results)
    shutil.rmtree(other)
    shutil.copytree(chief, other)
    results = run_workers(trained_run.data_dir, [chief, other], "--epochs", "5", "--resume")
    assert [code for code, _, _ in results] == [0, 0], results[0][2][-2000:]
    assert "resuming after epoch 4" in results[0][1]
    assert [row["epoch"] for row in read_history(os.path.join(chief, "history.csv"))] == [1, 2, 3, 4, 5]
    assert len(read_history(os.path.join(other, "history.csv"))) == 4  # untouched copy


@pytest.mark.slow
def test_mirrored_splits_the_global_batch_across_two_replicas_and_resumes(trained_run, tmp_path):
    run_dir = fresh_run(trained_run.run_dir, str(tmp_path / "mirrored"))
    command = [sys.executable, TWO_CPUS, "--data_dir", trained_run.data_dir, "--run_dir", run_dir,
               "--strategy", "mirrored", *LEARNING]
    odd = subprocess.run(command + ["--epochs", "1", "--batch_size", "7"], capture_output=True, text=True,
                         timeout=300)
    assert odd.returncode == 2 and "must split evenly across 2 replicas" in odd.stderr.strip().splitlines()[-1]
    result = subprocess.run(command + ["--epochs", "2", "--decoder", "merge"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 replica(s) on 1 worker(s)" in result.stdout
    result = subprocess.run(command + ["--epochs", "3", "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "resuming after epoch 2" in result.stdout, result.stderr[-2000:]
    history = read_history(os.path.join(run_dir, "history.csv"))
    assert [row["epoch"] for row in history] == [1, 2, 3] and history[-1]["loss"] < history[0]["loss"]
    assert Captioner(run_dir).caption_features(np.zeros((1, 1280), np.float32))[0]


def test_multi_worker_without_a_usable_tf_config_is_refused(trained_run, tmp_path, monkeypatch):
    run_dir = fresh_run(trained_run.run_dir, str(tmp_path / "run"))
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        train(tiny_config(trained_run.data_dir, run_dir, strategy="multi_worker"))
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid"):
        train(tiny_config(trained_run.data_dir, run_dir, strategy="multi_worker"))
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]},
                                                "task": {"type": "worker", "index": 3}}))
    with pytest.raises(ValueError, match="task index 3"):
        train(tiny_config(trained_run.data_dir, run_dir, strategy="multi_worker"))
    assert sorted(os.listdir(run_dir)) == sorted(RUN_FILES)
    # A worker must not extract features itself: the others would race it into the same folder.
    empty = str(tmp_path / "empty")
    [(code, _, err)] = run_workers(trained_run.data_dir, [empty], "--epochs", "1")
    assert code == 2 and "run preprocess.py first" in err.strip().splitlines()[-1]
    assert not os.path.exists(empty)


def test_mirrored_attention_decoder_adds_its_penalty_like_fit_does(attention_run, tmp_path):
    run_dir = fresh_run(attention_run.run_dir, str(tmp_path / "attention"))
    result = subprocess.run([sys.executable, TWO_CPUS, "--data_dir", attention_run.data_dir, "--run_dir", run_dir,
                             "--strategy", "mirrored", "--decoder", "attention", "--attention_units", "8",
                             "--epochs", "1", "--batch_size", "8", "--embedding_dim", "16", "--units", "16",
                             "--min_word_count", "1", "--encoder", "mobilenet_v2", "--weights", "none"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    mirrored = read_history(os.path.join(run_dir, "history.csv"))[0]
    fitted = read_history(os.path.join(attention_run.run_dir, "history.csv"))[0]
    # After one epoch both sit near chance (ln 50 = 3.9) plus a penalty of about 0.6; without the
    # penalty, or with it counted once per replica, the two would differ by 0.3 or more.
    assert mirrored["loss"] - mirrored["val_loss"] > 0.3
    assert mirrored["loss"] == pytest.approx(fitted["loss"], abs=0.1)
    assert Captioner(run_dir).has_attention
