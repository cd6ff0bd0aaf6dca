"""train.py / preprocess.py --features_from: more decoders on one run's (fine-tuned) features, which then
caption together as an ensemble; what it refuses to start from."""
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from conftest import fine_tune_copy


@pytest.mark.slow
def test_decoders_trained_on_one_fine_tuned_runs_features_form_an_ensemble(fine_tuned_run, trained_run, tmp_path):
    """train.py --features_from: another decoder (another seed) on a fine-tuned run's features, which then
    captions together with that run; a run with another fine-tuned encoder is refused."""
    import filecmp

    from serving.captioner import Captioner
    from conftest import run_main
    from inputs.run_folder import ENCODER_MODEL
    from train import check_later_phase_features, train

    config, _ = fine_tuned_run
    member = str(tmp_path / "member")
    sizes = ("--embedding_dim", str(config.embedding_dim), "--units", str(config.units))
    result = run_main("train.py", "--data_dir", config.data_dir, "--run_dir", member, "--features_from",
                      config.run_dir, "--seed", "5", "--epochs", "1", *sizes)
    assert result.returncode == 0, result.stderr
    assert "copied the fine-tuned encoder, its features, vocabulary and captions" in result.stdout
    # The encoder it trains on is the fine-tuned file, not the weights that fine-tuning started from.
    assert "(global features), fine-tuned from none (UNTRAINED" in result.stdout and "(encoder.keras)" in result.stdout
    source = Captioner(config.run_dir)
    store = source.metadata["feature_store"]["name"]
    for name in (ENCODER_MODEL, "vocabulary.json", "captions.json", store + ".bin", store + ".index"):
        assert filecmp.cmp(os.path.join(config.run_dir, name), os.path.join(member, name), shallow=False)
    alone = Captioner(member)
    assert alone.metadata["features_from"] == os.path.abspath(config.run_dir)
    # A decoder of its own, trained from its own initialisation, not a copy of the source's.
    assert any(not np.array_equal(mine, theirs)
               for mine, theirs in zip(alone.model.get_weights(), source.model.get_weights()))
    image_dir = alone.metadata["image_dir"]
    paths = [os.path.join(image_dir, name) for name in sorted(os.listdir(image_dir))[:4]]
    captions, _, errors, _ = Captioner([config.run_dir, member]).caption_files(paths)
    assert not errors and len(captions) == 4 and all(isinstance(caption, str) for caption in captions.values())
    # The same command again (an interrupted run resumed) finds the copy made and goes on training.
    again = run_main("train.py", "--data_dir", config.data_dir, "--run_dir", member, "--features_from",
                     config.run_dir, "--resume", "--epochs", "1", *sizes)
    assert again.returncode == 0 and "already trained for 1 epochs" in again.stdout, again.stderr
    # So does that command with --objective scst added: --features_from names the run the copy came from.
    check_later_phase_features(dataclasses.replace(config, run_dir=member, features_from=config.run_dir,
                                                   objective="scst"))

    # The same frozen run fine-tuned again with another seed: another encoder, so no ensemble.
    other = fine_tune_copy(trained_run, tmp_path, "other", seed=11)
    train(other)
    with pytest.raises(ValueError, match="has fine-tuned encoder.keras sha256 .*, .* has fine-tuned encoder.keras "
                                         "sha256 .*share one encoder"):
        Captioner([member, other.run_dir])


def test_features_from_refuses_what_it_cannot_start_from(fine_tuned_run, trained_run, tmp_path):
    from conftest import run_main

    config, _ = fine_tuned_run
    new = str(tmp_path / "new")

    def refused(*arguments: str) -> str:
        result = run_main("preprocess.py", *arguments)
        assert result.returncode == 2 and result.stdout == "" and len(result.stderr.splitlines()) == 1, result
        return result.stderr

    assert "no metadata.json" in refused("--features_from", str(tmp_path / "nothing"), "--run_dir", new)
    assert "is the run folder itself" in refused("--features_from", config.run_dir, "--run_dir", config.run_dir)
    assert "already has its own features" in refused("--features_from", config.run_dir, "--run_dir",
                                                     trained_run.run_dir)
    unfinished = str(tmp_path / "unfinished")
    shutil.copytree(config.run_dir, unfinished)
    metadata_path = os.path.join(unfinished, "metadata.json")
    with open(metadata_path, encoding="utf-8") as handle:
        metadata = json.load(handle)
    metadata["fine_tuned_encoder"]["features_written"] = False
    with open(metadata_path, "w", encoding="utf-8") as handle:
        json.dump(metadata, handle)
    assert "--fine_tune_encoder --resume" in refused("--features_from", unfinished, "--run_dir", new)
    assert "leave out --shard and --download" in refused("--features_from", config.run_dir, "--run_dir", new,
                                                         "--shard", "0/2")
    assert not os.path.exists(new)  # nothing started
    # A run with a frozen encoder gives its features alone: the copy has no encoder file.
    frozen_copy = run_main("preprocess.py", "--features_from", trained_run.run_dir, "--run_dir", new)
    assert frozen_copy.returncode == 0 and "copied the features, vocabulary" in frozen_copy.stdout
    assert not os.path.exists(os.path.join(new, "encoder.keras"))
