"""predict.py and evaluate.py on a trained tiny run: one file, several, a folder, the best beams, bad
images and damaged run folders, the features predict computes, scores, reports and captions files."""
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_main, tiny_config
from inputs.feature_store import open_features
from train import train


def read_json(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as handle:
        return json.load(handle)


def test_predict_one_file_several_files_and_a_folder(trained_run, tmp_path):
    images = os.path.join(trained_run.data_dir, "Flicker8k_Dataset")
    names = sorted(os.listdir(images))[:3]
    one = run_main("predict.py", "--run_dir", trained_run.run_dir, "--image_path", os.path.join(images, names[0]))
    assert one.returncode == 0, one.stderr
    assert len(one.stdout.strip().splitlines()) == 1 and one.stdout.strip()
    assert "UNTRAINED" in one.stderr and "encoder mobilenet_v2, weights none" in one.stderr
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in names:
        shutil.copy(os.path.join(images, name), folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    output = tmp_path / "captions.json"
    many = run_main("predict.py", "--run_dir", trained_run.run_dir, "--image_path", str(folder),
                    "--output", str(output))
    assert many.returncode == 0, many.stderr
    lines = many.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(folder / name) for name in names]
    assert "1 of 4 images skipped" in many.stderr
    written = read_json(str(output))
    assert written["weights"] == "none" and len(written["captions"]) == 3
    assert written["captions"][str(folder / names[0])] == one.stdout.strip()


def test_predict_top_shows_the_best_beams_with_log_probabilities(trained_run, tmp_path):
    images = os.path.join(trained_run.data_dir, "Flicker8k_Dataset")
    image = os.path.join(images, sorted(os.listdir(images))[0])
    output = tmp_path / "top.json"
    result = run_main("predict.py", "--run_dir", trained_run.run_dir, "--image_path", image, "--beam_size", "4",
                      "--top", "3", "--output", str(output))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(".")[0] for line in lines] == ["1", "2", "3"]
    log_probabilities = [float(line.rsplit("log-probability ", 1)[1].rstrip(")")) for line in lines]
    assert log_probabilities == sorted(log_probabilities, reverse=True) and all(v < 0 for v in log_probabilities)
    beams = read_json(str(output))["captions"][image]
    assert [beam["caption"] for beam in beams] == [line.split(". ", 1)[1].split("\t")[0] for line in lines]
    greedy_beam = run_main("predict.py", "--run_dir", trained_run.run_dir, "--image_path", image, "--beam_size", "4")
    assert greedy_beam.stdout.strip() == beams[0]["caption"]

    too_few = run_main("predict.py", "--run_dir", trained_run.run_dir, "--image_path", image, "--top", "3")
    assert too_few.returncode == 2 and "error: --top 3 needs at least 3 beams" in too_few.stderr


@pytest.mark.parametrize("content", [None, b"", b"plain text, not an image", "truncated"])
def test_predict_bad_image_is_one_line_and_nonzero(trained_run, tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        source = os.path.join(trained_run.data_dir, "Flicker8k_Dataset", sorted(os.listdir(
            os.path.join(trained_run.data_dir, "Flicker8k_Dataset")))[0])
        path.write_bytes(open(source, "rb").read()[:400])
    elif content is not None:
        path.write_bytes(content)
    result = run_main("predict.py", "--run_dir", trained_run.run_dir, "--image_path", str(path))
    assert result.returncode != 0 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0]
    assert not any(line.startswith("skipped") for line in result.stderr.splitlines())  # one line, not two


def test_predict_computes_the_features_preprocess_stored(trained_run):
    from serving.captioner import Captioner

    captioner = Captioner(trained_run.run_dir)
    features, rows = open_features(trained_run.run_dir, captioner.metadata)
    name = sorted(rows)[0]
    _, computed, errors = captioner.image_features([os.path.join(trained_run.data_dir, "Flicker8k_Dataset", name)])
    assert not errors
    np.testing.assert_allclose(computed[0], features[rows[name]], rtol=1e-4, atol=1e-5)


def test_predict_without_a_trained_model_says_what_to_run(tmp_path):
    result = run_main("predict.py", "--run_dir", str(tmp_path), "--image_path", "x.jpg")
    assert result.returncode == 2 and "run preprocess.py" in result.stderr


@pytest.mark.parametrize("damaged, script", [("metadata.json", "predict.py"), ("vocabulary.json", "predict.py"),
                                             ("training_state.json", "train.py")])
def test_a_damaged_run_file_is_named_in_one_line(trained_run, tmp_path, damaged, script):
    run_dir = str(tmp_path / "run")
    shutil.copytree(trained_run.run_dir, run_dir)
    path = os.path.join(run_dir, damaged)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text[:len(text) // 2])  # a copy cut off half-way
    if script == "predict.py":
        images = os.path.join(trained_run.data_dir, "Flicker8k_Dataset")
        image = os.path.join(images, sorted(os.listdir(images))[0])
        result = run_main(script, "--run_dir", run_dir, "--image_path", image)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: {path}: not valid JSON"), result.stderr
    else:
        with pytest.raises(ValueError, match=f"^{re.escape(path)}: not valid JSON"):
            train(tiny_config(trained_run.data_dir, run_dir, epochs=3, resume=True))
    assert os.path.getsize(path) == len(text[:len(text) // 2].encode())  # left as it was, for the user to restore


def test_evaluate_scores_with_coco_metrics_and_writes_json_and_report(trained_run):
    result = run_main("evaluate.py", "--run_dir", trained_run.run_dir, "--split", "dev", "--report")
    assert result.returncode == 0, result.stderr
    assert "no <start>/<end> tokens" in result.stdout and "model (beam 3)" in result.stdout
    assert "CIDEr-D" in result.stdout and "caption prior" in result.stdout
    report = read_json(trained_run.run_dir, "evaluation_dev_beam3.json")
    assert report["images_scored"] == 3 and report["images_missing"] == 0
    assert report["config"]["beam_size"] == 3 and report["config"]["split"] == "dev"  # the resolved config
    assert set(report["scores"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}
    assert report["nltk_bleu"]["BLEU-1"] == pytest.approx(report["scores"]["BLEU-1"], abs=1e-6)
    for entry in report["captions"].values():
        assert len(entry["references"]) == 5 and "<end>" not in entry["generated"]
        assert set(entry["scores"]) == set(report["scores"])
    page = open(os.path.join(trained_run.run_dir, "report_dev_beam3.html"), encoding="utf-8").read()
    assert page.count("<tr><td>") == 3 and all(name in page for name in report["captions"])
    with Image.open(os.path.join(trained_run.run_dir, "report_dev_beam3.png")) as grid:
        grid.verify()
        assert grid.format == "PNG" and grid.size == (960, 430)  # one row of three tiles, 320 x 430 each


def test_evaluate_a_captions_file_needs_only_the_caption_files(trained_run, tmp_path):
    text_only = tmp_path / "text_only"
    shutil.copytree(os.path.join(trained_run.data_dir, "Flickr8k_text"), text_only / "Flickr8k_text")
    test_names = (text_only / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()
    references = read_json(trained_run.run_dir, "captions.json")["test"]
    # One image gets its own first reference, one a caption from nowhere, one no caption at all.
    captions = {test_names[0]: references[test_names[0]][0], test_names[1]: "zebra zebra zebra"}
    captions_file = tmp_path / "other_system.json"
    captions_file.write_text(json.dumps(captions))
    result = run_main("evaluate.py", "--data_dir", str(text_only), "--split", "test", "--captions", str(captions_file))
    assert result.returncode == 0, result.stderr
    assert "missing 1 of 3 test images: no caption in the file" in result.stderr
    scores = read_json(str(tmp_path / "other_system.scores_test.json"))
    assert scores["images_scored"] == 2 and scores["missing_images"] == [test_names[2]]
    good, bad = scores["captions"][test_names[0]]["scores"], scores["captions"][test_names[1]]["scores"]
    assert good["BLEU-4"] > 0.5 and bad["BLEU-1"] < 1e-9 and good["CIDEr-D"] > bad["CIDEr-D"] == 0.0

    captions_file.write_text("{not json")
    broken = run_main("evaluate.py", "--data_dir", str(text_only), "--split", "test", "--captions", str(captions_file))
    assert broken.returncode == 2 and broken.stderr.strip().splitlines() == [
        f"error: {captions_file}: not valid JSON (Expecting property name enclosed in double quotes, line 1)"]


def test_the_evaluation_file_name_spells_every_decoding_choice():
    from inputs.run_folder import evaluation_file
    from tagging.policy import PolicySettings

    assert evaluation_file("run", "dev") == os.path.join("run", "evaluation_dev.json")
    assert evaluation_file("run", "test", beam_size=3, kind="report") == os.path.join("run", "report_test_beam3")
    named = evaluation_file("run", "dev", beam_size=3, length_penalty=0.5, no_repeat_ngram_size=3,
                            block_bad_endings=True, model_file="model_xe.keras", ensemble_size=2,
                            ensemble_mean="arithmetic", guidance=PolicySettings(0.35, 3, 0.5, 0.9))
    assert os.path.basename(named) == \
        "evaluation_dev_beam3_lp0.5_norepeat3_noendings_model_xe_ensemble2_arithmetic_guided0.35k3m0.5s0.9.json"
