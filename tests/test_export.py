"""export.py: a SavedModel and a LiteRT model that caption like predict.py, checked in a fresh Python
process that imports nothing from this repository; the in-graph image decoding against load_image;
bad input."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, run_main, tiny_config

# Run in a fresh interpreter, from a folder outside the repository: only TensorFlow and LiteRT.
SERVING_CLIENT = r"""
import json, sys
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

request = json.load(open(sys.argv[1]))
assert "captioner" not in sys.modules and "export" not in sys.modules
images = tf.constant([open(path, "rb").read() for path in request["images"]])
answer = {"saved_model": {}, "tflite": {}}
for name, folder in request["saved_models"].items():
    model = tf.saved_model.load(folder)
    out = model.signatures["serving_default"](images=images)
    answer["saved_model"][name] = {"captions": [c.decode() for c in out["captions"].numpy()],
                                   "log_probabilities": out["log_probabilities"].numpy().tolist()}
    features = model.signatures["image_features"](images=tf.constant(
        [open(path, "rb").read() for path in request["feature_images"]]))["image_features"].numpy()
    np.save(folder + "_features.npy", features)
    try:
        model.signatures["serving_default"](images=tf.constant([b"GIF89a broken", images[0].numpy()]))
        answer["saved_model"][name]["corrupt"] = "no error"
    except tf.errors.InvalidArgumentError as error:
        answer["saved_model"][name]["corrupt"] = "InvalidArgumentError"
    # The same loaded model still answers the next request.
    answer["saved_model"][name]["after_corrupt"] = model.signatures["serving_default"](
        images=images[:1])["captions"].numpy()[0].decode()
for name, path in request["tflite"].items():
    runner = Interpreter(model_path=path).get_signature_runner()
    captions = []
    for pixels_file in request["pixels"]:
        out = runner(pixels=np.load(pixels_file)[None])
        captions.append(" ".join(word.decode() for word in out["words"] if word))
    answer["tflite"][name] = captions
print(json.dumps(answer))
"""


def export_cli(config, **flags):
    """export.py's export() with the command line's defaults (--guide auto) and these flags."""
    import export

    return export.export(dataclasses.replace(config, **{"guide": "auto", **flags}))


@pytest.fixture(scope="module")
def photos(trained_run, tmp_path_factory):
    """The tiny dev and test images at the encoder's 224 x 224 (so neither side resizes), one of them
    stored sideways with EXIF orientation 6, and the original 96-pixel files."""
    folder = tmp_path_factory.mktemp("photos")
    source = os.path.join(trained_run.data_dir, "Flicker8k_Dataset")
    originals = sorted(os.path.join(source, name) for name in os.listdir(source))[-6:]
    paths = []
    for index, original in enumerate(originals):
        image = Image.open(original).convert("RGB").resize((224, 224), Image.BILINEAR)
        path = str(folder / f"photo_{index}.{'png' if index % 2 else 'jpg'}")
        if index == 0:
            exif = Image.Exif()
            exif[0x0112] = 6  # "turn 270 degrees to view": a phone's portrait photo
            image.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=90)
        else:
            image.save(path, quality=90)
        paths.append(path)
    return paths, originals


@pytest.fixture(scope="module")
def exported(tiny_package, attention_run, photos, tmp_path_factory):
    """Every export the tests read, then one fresh serving process over all of them."""
    from serving.captioner import Captioner
    from inputs.images import load_image

    folder = tmp_path_factory.mktemp("exported")
    package = tiny_config("", tiny_package)
    saved = {"greedy": str(folder / "merge"), "beam": str(folder / "merge"), "attention": str(folder / "attention")}
    export_cli(package, output=saved["greedy"], export_version=1)
    export_cli(package, output=saved["beam"], export_version=2, beam_size=2)
    export_cli(attention_run, output=saved["attention"])
    tflite = {"float": str(folder / "merge.tflite"), "quantized": str(folder / "merge_q.tflite"),
              "attention": str(folder / "attention.tflite")}
    export_cli(package, format="tflite", output=tflite["float"])
    export_cli(package, format="tflite", output=tflite["quantized"], quantize=True)
    export_cli(attention_run, format="tflite", output=tflite["attention"])
    paths, originals = photos
    pixels = []
    for path in paths:
        pixels.append(str(folder / (os.path.basename(path) + ".npy")))
        np.save(pixels[-1], load_image(path, 224)[0].astype(np.uint8))  # what an app hands the model
    request = {"images": paths, "feature_images": originals, "pixels": pixels, "tflite": tflite,
               "saved_models": {"greedy": saved["greedy"] + "/1", "beam": saved["beam"] + "/2",
                                "attention": saved["attention"] + "/1"}}
    request_file = folder / "request.json"
    request_file.write_text(json.dumps(request))
    client = subprocess.run([sys.executable, "-c", SERVING_CLIENT, str(request_file)], cwd=str(folder),
                            capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert client.returncode == 0, client.stderr[-2000:]
    answer = json.loads(client.stdout.strip().splitlines()[-1])
    return {"answer": answer, "request": request, "tflite": tflite,
            "package": Captioner(tiny_package), "attention": Captioner(attention_run.run_dir)}


@pytest.mark.slow
def test_saved_model_captions_like_predict_greedy_and_beam(exported, photos):
    paths, _ = photos
    package, answer = exported["package"], exported["answer"]["saved_model"]
    kept, features, errors = package.image_features(paths)
    assert kept == paths and not errors
    greedy = package.caption_features(features, beam_size=1)
    assert answer["greedy"]["captions"] == greedy
    beams = package.top_captions(features, top=1, beam_size=2)
    assert answer["beam"]["captions"] == [image_beams[0][0] for image_beams in beams]
    np.testing.assert_allclose(answer["beam"]["log_probabilities"], [b[0][1] for b in beams], atol=1e-4)
    assert all(p < 0 for p in answer["greedy"]["log_probabilities"])


@pytest.mark.slow
def test_attention_run_exports_to_both_formats_and_captions_like_predict(exported, photos):
    paths, _ = photos
    captioner = exported["attention"]
    _, features, _ = captioner.image_features(paths)
    greedy = captioner.caption_features(features, beam_size=1)
    assert exported["answer"]["saved_model"]["attention"]["captions"] == greedy
    assert exported["answer"]["tflite"]["attention"] == greedy


@pytest.mark.slow
def test_exported_features_equal_predicts_for_files_that_need_resizing(exported):
    originals = exported["request"]["feature_images"]  # 96 x 96 JPEGs: both sides resize them to 224
    _, expected, _ = exported["package"].image_features(originals)
    got = np.load(exported["request"]["saved_models"]["greedy"] + "_features.npy")
    from serving.encoder_check import cosine_similarities

    assert got.shape == expected.shape
    assert cosine_similarities(got, expected).min() > 0.9999


@pytest.mark.slow
def test_a_corrupt_image_fails_its_request_and_the_model_keeps_serving(exported):
    answer = exported["answer"]["saved_model"]["greedy"]
    assert answer["corrupt"] == "InvalidArgumentError"
    assert answer["after_corrupt"] == answer["captions"][0]


@pytest.mark.slow
def test_litert_model_gives_predicts_greedy_captions(exported, photos):
    paths, _ = photos
    package = exported["package"]
    _, features, _ = package.image_features(paths)
    assert exported["answer"]["tflite"]["float"] == package.caption_features(features, beam_size=1)
    quantized, full = (os.path.getsize(exported["tflite"][k]) for k in ("quantized", "float"))
    assert quantized < 0.4 * full
    assert all(caption for caption in exported["answer"]["tflite"]["quantized"])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_in_graph_decoding_gives_load_images_pixels(orientation, tmp_path):
    """Every EXIF orientation, transparency, grayscale, palette and resizing, against Pillow's path."""
    import tensorflow as tf

    from inputs.images import load_image
    from serving.graph_images import image_pixels

    rng = np.random.default_rng(orientation)
    photo = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).resize((300, 200))
    cases = {}
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo.save(tmp_path / "exif.jpg", exif=exif, quality=95)
    cases["exif.jpg"] = 1  # Pillow resizes 8-bit pixels and rounds: one level apart at most
    if orientation == 1:
        photo.resize((224, 224)).save(tmp_path / "same_size.jpg")
        rgba = np.concatenate([np.asarray(photo), rng.integers(0, 256, (200, 300, 1), dtype=np.uint8)], axis=-1)
        Image.fromarray(rgba).resize((224, 224)).save(tmp_path / "alpha.png")
        photo.resize((224, 224)).convert("L").save(tmp_path / "gray.png")
        photo.resize((224, 224)).convert("P").save(tmp_path / "palette.gif")
        photo.resize((224, 224)).save(tmp_path / "bitmap.bmp")
        cases.update({"same_size.jpg": 0, "alpha.png": 0, "gray.png": 0, "palette.gif": 0, "bitmap.bmp": 0})
    for name, tolerance in cases.items():
        path = str(tmp_path / name)
        expected, _ = load_image(path, 224)
        got = image_pixels(tf.constant(open(path, "rb").read()), 224).numpy()
        assert np.abs(got - expected).max() <= tolerance, name
        assert np.abs(got - expected).mean() < 0.3, name


def test_bad_exports_are_one_line_and_write_nothing(trained_run, tmp_path):
    empty_run = tmp_path / "no_model"
    empty_run.mkdir()
    preprocessed_only = tmp_path / "preprocessed_only"
    preprocessed_only.mkdir()
    for name in ("metadata.json", "vocabulary.json"):
        shutil.copy(os.path.join(trained_run.run_dir, name), preprocessed_only / name)
    taken = tmp_path / "taken.tflite"
    taken.write_bytes(b"keep me")
    (tmp_path / "served" / "1").mkdir(parents=True)
    cases = [
        (["--run_dir", str(empty_run), "--output", str(tmp_path / "a")], "no metadata.json; run preprocess.py"),
        (["--run_dir", str(preprocessed_only), "--output", str(tmp_path / "a")], "no model.keras; run train.py"),
        (["--run_dir", trained_run.run_dir, "--format", "onnx", "--output", str(tmp_path / "b")],
         "--format onnx: choose saved_model or tflite"),
        (["--run_dir", trained_run.run_dir, "--format", "tflite", "--output", str(taken)], "already exists"),
        (["--run_dir", trained_run.run_dir, "--output", str(tmp_path / "served")], "served/1 already exists"),
        (["--run_dir", trained_run.run_dir, "--format", "tflite", "--beam_size", "3", "--output",
          str(tmp_path / "c")], "decodes greedily"),
    ]
    before = sorted(os.listdir(tmp_path))
    for index, (arguments, message) in enumerate(cases):
        # The first as its own process; the others inside this one, without a second TensorFlow start-up.
        result = (run_cli if index == 0 else run_main)("export.py", *arguments)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
    assert sorted(os.listdir(tmp_path)) == before
    assert taken.read_bytes() == b"keep me" and os.listdir(tmp_path / "served") == ["1"]
