"""Ensembles through evaluate.py and predict.py (--run_dir A B ...), and the decoding rules from the command line."""
import json
import os
import shutil

import pytest

from conftest import run_main
from test_pipeline import read_json


@pytest.fixture
def two_copies(trained_run, tmp_path):
    copies = [str(tmp_path / name) for name in ("a", "b")]
    for copy in copies:
        shutil.copytree(trained_run.run_dir, copy)
    return copies


def test_an_ensemble_of_two_copies_captions_like_one_run(trained_run, two_copies, capsys):
    import evaluate
    import predict

    first, second = two_copies
    arguments = ["--data_dir", trained_run.data_dir, "--split", "dev"]
    # In this process (the scripts' main, without a new TensorFlow start-up per call).
    assert evaluate.main(["--run_dir", first, *arguments]) == 0
    assert evaluate.main(["--run_dir", first, second, *arguments]) == 0
    assert "ensemble of 2 merge decoders" in capsys.readouterr().out
    alone = read_json(first, "evaluation_dev_beam3.json")
    together = read_json(first, "evaluation_dev_beam3_ensemble2.json")
    assert together["ensemble"] == [first, second]
    assert {name: entry["generated"] for name, entry in together["captions"].items()} == \
           {name: entry["generated"] for name, entry in alone["captions"].items()}
    assert together["caption_statistics"]["distinct"] == alone["caption_statistics"]["distinct"]
    # Either mean of two equal distributions is that distribution: the same captions again.
    assert evaluate.main(["--run_dir", first, second, *arguments, "--ensemble_mean", "arithmetic"]) == 0
    arithmetic = read_json(first, "evaluation_dev_beam3_ensemble2_arithmetic.json")
    assert together["decoding"].endswith("geometric mean") and arithmetic["decoding"].endswith("arithmetic mean")
    assert {name: entry["generated"] for name, entry in arithmetic["captions"].items()} == \
           {name: entry["generated"] for name, entry in alone["captions"].items()}

    image = os.path.join(trained_run.data_dir, "Flicker8k_Dataset")
    output = os.path.join(first, "pair.json")
    assert predict.main(["--run_dir", first, second, "--image_path", image, "--output", output]) == 0
    with open(output, encoding="utf-8") as handle:
        assert json.load(handle)["run_dir"] == [first, second]
    with pytest.raises(ValueError, match="not an ensemble's"):
        predict.main(["--run_dir", first, second, "--image_path", image, "--attention_map", "x.png"])


@pytest.mark.parametrize("change", ["vocabulary", "encoder"])
def test_runs_that_do_not_match_are_refused_with_one_line(trained_run, two_copies, change, tmp_path):
    first, second = two_copies
    if change == "vocabulary":
        path = os.path.join(second, "vocabulary.json")
        tokens = read_json(path)["tokens"]
        tokens[4], tokens[5] = tokens[5], tokens[4]
        expected = f"error: ensemble: {second} and {first} have different vocabularies"
    else:
        path = os.path.join(second, "metadata.json")
        metadata = read_json(path)
        tokens = None
        metadata["encoder"] = "vgg16"
        expected = f"error: ensemble: {second} has encoder vgg16, {first} has mobilenet_v2"
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"tokens": tokens} if tokens else metadata, handle)
    missing_image = str(tmp_path / "not_there.jpg")  # not read: the runs are checked first
    result = run_main("predict.py", "--run_dir", first, second, "--image_path", missing_image)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected)


def test_decoding_rules_and_caption_statistics_from_the_command_line(trained_run, capsys):
    import evaluate

    arguments = ["--run_dir", trained_run.run_dir, "--data_dir", trained_run.data_dir, "--split", "dev",
                 "--beam_size", "1"]
    assert evaluate.main(arguments) == 0
    assert evaluate.main([*arguments, "--no_repeat_ngram_size", "2", "--block_bad_endings"]) == 0
    assert "no repeated 2-grams, no bad endings" in capsys.readouterr().out
    result = read_json(trained_run.run_dir, "evaluation_dev_norepeat2_noendings.json")
    statistics = result["caption_statistics"]
    captions = [entry["generated"] for entry in result["captions"].values()]
    assert statistics["distinct"] == len(set(captions))
    assert statistics["unknown_word"] == 0 and statistics["repeated_phrase"] == 0
    for caption in captions:
        words = caption.split()
        assert len(set(zip(words, words[1:]))) == len(words) - 1
    bad = run_main("evaluate.py", *arguments, "--no_repeat_ngram_size", "-1")
    assert bad.returncode == 2 and "--no_repeat_ngram_size must be 0" in bad.stderr
