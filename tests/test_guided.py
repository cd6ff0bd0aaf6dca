"""Guided decoding through the scripts (--guide tags): tags printed and written, captions made to name a
confident tag, unguided where no tag passes, the exported SavedModel alike, and every bad input.

The tiny run's encoder is untrained, so its features are close to zero and a classifier's bias decides the
tags: the classifier made here calls every image class 0 (probability 0.96), a "red circle" whose WordNet
id lies in the cats' range, which the rule names by its label's last word, "circle"."""
import json
import os

import pytest

from conftest import run_main
from config import Config
from tagging.policy import PolicySettings

DEFAULTS = PolicySettings.of(Config())
# The tiny model is barely trained: its guided captions are far less likely than its plain ones, so the tests
# that check the caption names the tag accept any likelihood (the margin has tests of its own).
ANY_MARGIN = ("--guide_margin", "1000")


def dev_images(config):
    folder = os.path.join(config.data_dir, "Flicker8k_Dataset")
    with open(os.path.join(config.data_dir, "Flickr8k_text", "Flickr_8k.devImages.txt"), encoding="utf-8") as handle:
        return [os.path.join(folder, line.strip()) for line in handle if line.strip()]


def predict(config, *arguments):
    return run_main("predict.py", "--run_dir", config.run_dir, *arguments)


def test_a_confident_tag_the_caption_misses_is_named_and_shown(trained_run, classifier_files, tmp_path):
    images = dev_images(trained_run)
    plain = predict(trained_run, "--guide", "none", "--image_path", *images)
    assert plain.returncode == 0, plain.stderr
    output = str(tmp_path / "captions.json")
    guided = predict(trained_run, *classifier_files, *ANY_MARGIN, "--image_path", *images, "--output", output)
    assert guided.returncode == 0, guided.stderr
    assert (f"guided by ImageNet tags (floor {DEFAULTS.floor:g}, up to {DEFAULTS.constraints}, margin 1000, "
            f"sure {DEFAULTS.sure:g})") in guided.stderr
    written = json.load(open(output, encoding="utf-8"))
    for plain_line, line in zip(plain.stdout.splitlines(), guided.stdout.splitlines()):
        path, plain_caption = plain_line.split("\t")
        assert line.startswith(path + "\t") and "\ttags: red circle 0.96, " in line
        caption = line.split("\t")[1]
        assert "circle" in caption.split()
        tags = written["tags"][path]
        assert written["captions"][path] == caption and tags["tags"][0] == {"class": "red circle",
                                                                            "probability": pytest.approx(0.96, abs=0.01)}
        # An image whose unguided caption already names the tag keeps it; the others are guided to name it.
        assert tags["guided"] == ("circle" not in plain_caption.split())
        assert (caption == plain_caption) == (not tags["guided"])
        assert tags["constraints"] == ([{"words": "circle", "probability": pytest.approx(0.957, abs=0.01)}]
                                       if tags["guided"] else [])
    assert any(written["tags"][path]["guided"] for path in written["tags"])


def test_one_image_prints_its_caption_then_its_tags(trained_run, classifier_files):
    result = predict(trained_run, *classifier_files, "--image_path", dev_images(trained_run)[0], "--top", "2",
                     "--beam_size", "2")
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and lines[0].startswith("1. ") and lines[1].startswith("2. ")
    assert lines[2].startswith("tags: red circle 0.96")


def test_no_tag_over_the_threshold_leaves_every_caption_as_it_was(trained_run, classifier_files):
    images = dev_images(trained_run)
    plain = predict(trained_run, "--guide", "none", "--beam_size", "3", "--image_path", *images)
    strict = predict(trained_run, *classifier_files, "--guide_threshold", "0.99", "--beam_size", "3",
                     "--image_path", *images)
    assert strict.returncode == 0, strict.stderr
    assert [line.split("\t")[:2] for line in strict.stdout.splitlines()] == \
        [line.split("\t") for line in plain.stdout.splitlines()]
    assert all("\ttags: red circle 0.96" in line and "guided to say" not in line for line in strict.stdout.splitlines())


def test_evaluate_counts_the_guided_captions_and_names_its_file_after_them(trained_run, classifier_files):
    result = run_main("evaluate.py", "--run_dir", trained_run.run_dir, "--split", "dev", "--beam_size", "1",
                      *classifier_files, *ANY_MARGIN)
    assert result.returncode == 0, result.stderr
    settings = f"{DEFAULTS.floor:g}k{DEFAULTS.constraints}m1000s{DEFAULTS.sure:g}"
    written = json.load(open(os.path.join(trained_run.run_dir, f"evaluation_dev_guided{settings}.json"),
                             encoding="utf-8"))
    guided = written["guided_images"]
    assert f"guided {len(guided)} of 3 captions by their ImageNet tags (floor {DEFAULTS.floor:g}" in result.stdout
    # Guided captions come from a search 5 beams wide, though --beam_size is 1: the scores' row says so.
    assert [line.split("  ")[0] for line in result.stdout.splitlines() if line.startswith("model (")] == [
        "model (greedy; guided: beam 5)"]
    for name, guidance in guided.items():
        assert "circle" in written["captions"][name]["generated"].split() and guidance["guided"]
    # predict.py captions the same images as evaluate.py does, by the same policy.
    predicted = predict(trained_run, *classifier_files, *ANY_MARGIN, "--beam_size", "1", "--image_path",
                        *dev_images(trained_run))
    by_name = {os.path.basename(line.split("\t")[0]): line.split("\t")[1] for line in predicted.stdout.splitlines()}
    assert {name: entry["generated"] for name, entry in written["captions"].items()} == by_name


def test_the_saved_model_guides_as_predict_does(trained_run, classifier_files, tmp_path):
    import tensorflow as tf

    images = dev_images(trained_run)
    exported = run_main("export.py", "--run_dir", trained_run.run_dir, "--output", str(tmp_path / "served"),
                        *classifier_files, *ANY_MARGIN)
    assert exported.returncode == 0, exported.stderr
    serve = tf.saved_model.load(str(tmp_path / "served" / "1")).signatures["serving_default"]
    out = serve(images=tf.constant([open(path, "rb").read() for path in images]))
    expected = predict(trained_run, *classifier_files, *ANY_MARGIN, "--image_path", *images)
    assert [caption.decode() for caption in out["captions"].numpy()] == \
        [line.split("\t")[1] for line in expected.stdout.splitlines()]
    assert [tags[0].decode() for tags in out["tags"].numpy()] == ["red circle"] * len(images)
    assert list(out["guided"].numpy()) == ["guided to say" in line for line in expected.stdout.splitlines()]
    refused = run_main("export.py", "--run_dir", trained_run.run_dir, "--format", "tflite", "--guide", "tags",
                       "--output", str(tmp_path / "c.tflite"), *classifier_files)
    assert refused.returncode == 2 and "--format tflite" in refused.stderr and "guided" in refused.stderr
    assert not os.path.exists(tmp_path / "c.tflite")


def damage(path: str, content: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(content)
    return path


def test_a_missing_or_damaged_guidance_file_is_one_line_naming_it_and_its_flag(trained_run, classifier_files,
                                                                               tmp_path):
    image = dev_images(trained_run)[0]
    weights, names = classifier_files[1], classifier_files[3]
    cases = [
        (["--class_names", str(tmp_path / "absent.json"), "--classifier_weights", weights], "--class_names"),
        (["--class_names", damage(str(tmp_path / "cut.json"), b'{"0": ["n01440764", "te'), "--classifier_weights",
          weights], "cut.json: not valid JSON"),
        (["--class_names", damage(str(tmp_path / "list.json"), b"[1, 2]"), "--classifier_weights", weights],
         "not an ImageNet class index"),
        (["--class_names", names, "--classifier_weights", str(tmp_path / "absent.weights.h5")],
         "--classifier_weights"),
        (["--class_names", names, "--classifier_weights", damage(str(tmp_path / "bad.weights.h5"), b"not hdf5")],
         "bad.weights.h5"),
    ]
    for flags, expected in cases:
        result = predict(trained_run, *flags, "--image_path", image)
        assert result.returncode == 2 and result.stdout == "", result
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and expected in lines[-1] and "--guide none" in lines[-1], lines
        assert sum(line.startswith("error: ") for line in lines) == 1
        assert predict(trained_run, *flags, "--guide", "none", "--image_path", image).returncode == 0


def test_runs_that_cannot_be_guided_say_so_once_and_caption(trained_run, classifier_files, tmp_path):
    image = dev_images(trained_run)[0]
    untrained = predict(trained_run, "--image_path", image)  # no classifier for an untrained encoder
    assert untrained.returncode == 0 and untrained.stdout.strip()
    assert untrained.stderr.count("no guidance by ImageNet tags") == 1 and "untrained encoder" in untrained.stderr
    index = {str(i): [f"n9{i:07d}", f"thing_{i}"] for i in range(1000)}  # no class the vocabulary can name
    (tmp_path / "foreign.json").write_text(json.dumps(index), encoding="utf-8")
    unmapped = predict(trained_run, "--classifier_weights", classifier_files[1], "--class_names",
                       str(tmp_path / "foreign.json"), "--image_path", image)
    assert unmapped.returncode == 0 and "its vocabulary has no word for any ImageNet class" in unmapped.stderr
    assert unmapped.stdout == untrained.stdout


def test_the_classifier_is_found_beside_the_encoder_weights(tmp_path):
    from tagging.imagenet import GuidanceUnavailable, class_index_path, classifier_weights_path

    for notop, top in (("mobilenet_v2_1.0_224_from_coral_ptq_notop.weights.h5",
                        "mobilenet_v2_1.0_224_from_coral_ptq.weights.h5"),
                       ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5")):
        (tmp_path / notop).write_bytes(b"")
        assert classifier_weights_path("mobilenet_v2", "auto", str(tmp_path / notop)) == str(tmp_path / top)
    assert classifier_weights_path("mobilenet_v2", "auto", "imagenet") == "imagenet"
    assert classifier_weights_path("mobilenet_v2", "mine.h5", "imagenet") == "mine.h5"
    with pytest.raises(GuidanceUnavailable):
        classifier_weights_path("mobilenet_v2", "auto", "none")
    (tmp_path / "custom.weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="--classifier_weights PATH"):
        classifier_weights_path("mobilenet_v2", "auto", str(tmp_path / "custom.weights.h5"))
    assert classifier_weights_path("efficientnet_lite0", "auto", "imagenet") == "imagenet"  # its installed package
    assert classifier_weights_path("efficientnet_lite0", "auto", "lite0.pth") == "lite0.pth"  # the file holds both
    assert class_index_path("mine.json") == "mine.json"


def test_the_class_names_ship_with_the_repository_as_keras_downloads_them():
    import hashlib

    from tagging.imagenet import CLASS_INDEX, CLASS_INDEX_MD5, class_index_path, read_class_index

    assert class_index_path("auto") == CLASS_INDEX
    with open(CLASS_INDEX, "rb") as handle:
        assert hashlib.md5(handle.read()).hexdigest() == CLASS_INDEX_MD5
    classes = read_class_index(CLASS_INDEX)
    assert (classes.wnids[0], classes.labels[0], classes.labels[999]) == ("n01440764", "tench", "toilet_tissue")
