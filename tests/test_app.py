"""The web page, driven by Streamlit's own test harness: upload, bad uploads, no runs, a run without a model."""
from __future__ import annotations

import io
import os
import shutil

import pytest
from PIL import Image

from conftest import PROJECT

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
APP = os.path.join(PROJECT, "app.py")


def open_app(runs_dir, monkeypatch, package_dir=None):
    monkeypatch.setenv("CAPTION_RUNS_DIR", str(runs_dir))
    # The runs under test come first unless a test asks for a package.
    monkeypatch.setenv("CAPTION_PRETRAINED_DIR", str(package_dir or os.path.join(str(runs_dir), "no_package")))
    app = streamlit_testing.AppTest.from_file(APP, default_timeout=300)
    app.run()
    assert not app.exception, app.exception
    return app


@pytest.fixture
def runs_dir(trained_run, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(trained_run.run_dir, runs / "tiny")
    return runs


def sample_image_bytes(trained_run) -> tuple[str, bytes]:
    folder = os.path.join(trained_run.data_dir, "Flicker8k_Dataset")
    name = sorted(os.listdir(folder))[0]
    with open(os.path.join(folder, name), "rb") as handle:
        return os.path.join(folder, name), handle.read()


def test_upload_shows_the_greedy_caption_and_the_best_beams(trained_run, runs_dir, monkeypatch):
    from serving.captioner import Captioner

    path, image_bytes = sample_image_bytes(trained_run)
    app = open_app(runs_dir, monkeypatch)
    assert any("UNTRAINED" in warning.value for warning in app.warning)
    assert any("mobilenet_v2" in markdown.value for markdown in app.sidebar.markdown)
    app.file_uploader[0].set_value(("photo.jpg", image_bytes, "image/jpeg"))
    app.run()
    assert not app.exception and not app.error
    captioner = Captioner(trained_run.run_dir)
    _, features, _ = captioner.image_features([path])
    expected_greedy = captioner.caption_features(features, beam_size=1)[0]
    expected_beams = captioner.top_captions(features, 3, beam_size=3)[0]
    assert f"**{expected_greedy}**" in [markdown.value for markdown in app.markdown]
    beams_text = app.text[0].value
    assert beams_text.startswith("best 3 of beam search, beam 3:")
    assert [line.split(". ", 1)[1].split("  (")[0] for line in beams_text.splitlines()[1:]] == \
        [text for text, _ in expected_beams]


def test_bad_uploads_get_a_message_and_the_good_one_is_still_captioned(trained_run, runs_dir, monkeypatch):
    _, image_bytes = sample_image_bytes(trained_run)
    huge = io.BytesIO()
    Image.new("L", (11000, 11000)).save(huge, format="PNG")  # 121 megapixels, a small file
    app = open_app(runs_dir, monkeypatch)
    app.file_uploader[0].set_value([("notes.jpg", b"plain text, not an image", "image/jpeg"),
                                    ("cut.jpg", image_bytes[:300], "image/jpeg"),
                                    ("huge.png", huge.getvalue(), "image/png"),
                                    ("good.jpg", image_bytes, "image/jpeg")])
    app.run()
    assert not app.exception
    errors = [error.value for error in app.error]
    assert len(errors) == 3
    assert "notes.jpg: cannot caption this file (not an image)" in errors[0]
    assert errors[1].startswith("cut.jpg: cannot caption this file (") and "truncated" in errors[1]
    assert errors[2].startswith("huge.png: cannot caption this file (image too large)")
    assert len(app.text) == 1 and "beam search" in app.text[0].value  # good.jpg still captioned


def test_no_runs_yet_and_a_run_without_a_model(trained_run, tmp_path, monkeypatch):
    empty = tmp_path / "empty_runs"
    app = open_app(empty, monkeypatch)
    assert any("No trained runs yet" in info.value for info in app.info)

    runs = tmp_path / "runs"
    (runs / "untrained").mkdir(parents=True)
    shutil.copy(os.path.join(trained_run.run_dir, "metadata.json"), runs / "untrained" / "metadata.json")
    app = open_app(runs, monkeypatch)
    assert [error.value for error in app.error] == [
        f"Run untrained cannot caption: {runs / 'untrained'}: no model.keras; run train.py "
        "(with the same --run_dir) first"]


def test_model_loads_once_and_a_repeated_caption_comes_from_the_cache(trained_run, runs_dir, monkeypatch):
    from serving import captioner as captioner_module

    calls = {"loads": 0, "encodes": 0}
    original_init, original_features = captioner_module.Captioner.__init__, captioner_module.Captioner.image_features

    def counting_init(self, *args, **kwargs):
        calls["loads"] += 1
        original_init(self, *args, **kwargs)

    def counting_features(self, *args, **kwargs):
        calls["encodes"] += 1
        return original_features(self, *args, **kwargs)

    monkeypatch.setattr(captioner_module.Captioner, "__init__", counting_init)
    monkeypatch.setattr(captioner_module.Captioner, "image_features", counting_features)
    _, image_bytes = sample_image_bytes(trained_run)
    app = open_app(runs_dir, monkeypatch)
    app.file_uploader[0].set_value(("photo.jpg", image_bytes, "image/jpeg"))
    app.run()
    first = app.markdown[0].value
    app.run()  # the same image again: neither the model nor the image is processed again
    assert calls == {"loads": 1, "encodes": 1} and app.markdown[0].value == first
    app.sidebar.slider[0].set_value(5)  # another beam width: captioned again, with the loaded model
    app.run()
    assert calls == {"loads": 1, "encodes": 2} and app.text[0].value.startswith("best 3 of beam search, beam 5:")


def test_an_attention_run_also_shows_where_it_looked(attention_run, trained_run, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(attention_run.run_dir, runs / "attention")
    shutil.copytree(trained_run.run_dir, runs / "merge")
    _, image_bytes = sample_image_bytes(trained_run)
    app = open_app(runs, monkeypatch)
    app.file_uploader[0].set_value(("photo.jpg", image_bytes, "image/jpeg"))
    app.run()
    assert not app.exception and not app.error
    captions = [caption for image in app.image for caption in image.captions]
    assert any(caption.startswith("where the attention decoder looked") for caption in captions)
    app.sidebar.selectbox[0].set_value("merge")
    app.run()
    assert not app.exception and not app.error
    captions = [caption for image in app.image for caption in image.captions]
    assert "photo.jpg" in captions
    assert not any(caption.startswith("where the attention decoder looked") for caption in captions)


def test_the_pretrained_package_is_the_first_choice_and_its_encoder_is_checked(trained_run, tiny_package, runs_dir,
                                                                            monkeypatch):
    from serving.captioner import Captioner

    path, image_bytes = sample_image_bytes(trained_run)
    app = open_app(runs_dir, monkeypatch, package_dir=tiny_package)
    assert app.sidebar.selectbox[0].options == ["pretrained captioner (Tiny, MobileNetV2)", "tiny"]
    assert any(caption.value.startswith("encoder check: cosine 1.0000") for caption in app.sidebar.caption)
    app.file_uploader[0].set_value(("photo.jpg", image_bytes, "image/jpeg"))
    app.run()
    assert not app.exception and not app.error
    packaged = Captioner(tiny_package)
    _, features, _ = packaged.image_features([path])
    assert f"**{packaged.caption_features(features, beam_size=1)[0]}**" in [markdown.value for markdown in app.markdown]
    # The same page with encoder weights other than the package's: the check warns.
    import keras

    keras.utils.set_random_seed(99)
    other = str(runs_dir.parent / "other.weights.h5")
    keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg",
                                   input_shape=(224, 224, 3)).save_weights(other)
    monkeypatch.setenv("CAPTION_WEIGHTS", other)
    app = open_app(runs_dir, monkeypatch, package_dir=tiny_package)
    assert any("differ from the ones this decoder was trained with" in warning.value for warning in app.warning)


def test_a_package_with_damaged_metadata_is_listed_and_says_what_is_wrong(tiny_package, runs_dir, monkeypatch,
                                                                          tmp_path):
    damaged = tmp_path / "damaged_package"
    shutil.copytree(tiny_package, damaged)
    (damaged / "metadata.json").write_text("{ not json")
    app = open_app(runs_dir, monkeypatch, package_dir=damaged)
    assert app.sidebar.selectbox[0].options == ["pretrained captioner", "tiny"]
    assert len(app.error) == 1 and app.error[0].value.startswith("pretrained captioner cannot caption: ")
    assert "metadata.json" in app.error[0].value


def test_the_page_guides_by_tags_and_shows_them_unless_unticked(trained_run, runs_dir, classifier_files,
                                                                 monkeypatch):
    from config import Config
    from serving.captioner import Captioner
    from tagging.policy import PolicySettings

    path, image_bytes = sample_image_bytes(trained_run)
    monkeypatch.setenv("CAPTION_CLASSIFIER_WEIGHTS", classifier_files[1])
    monkeypatch.setenv("CAPTION_CLASS_NAMES", classifier_files[3])
    app = open_app(runs_dir, monkeypatch)
    app.file_uploader[0].set_value(("photo.jpg", image_bytes, "image/jpeg"))
    app.run()
    assert not app.exception and not app.error, [error.value for error in app.error]
    captioner = Captioner(trained_run.run_dir)
    assert captioner.guide_by_tags(PolicySettings.of(Config()), classifier_files[1], classifier_files[3]) == ""
    features = captioner.image_features([path])[1]
    (guided,), (guidance,) = captioner.captions_and_guidance(features, beam_size=1)
    assert f"**{guided}**" in [markdown.value for markdown in app.markdown]
    captions = [caption.value for caption in app.caption]
    assert any(caption.startswith("ImageNet tags: red circle 0.96") for caption in captions)
    assert ("greedy caption, guided to say circle" in captions) == guidance.guided
    app.sidebar.checkbox[0].uncheck().run()
    assert not any(caption.value.startswith("ImageNet tags") for caption in app.caption)
    assert f"**{captioner.decoder.captions(features, captioner.vocabulary)[0]}**" in \
        [markdown.value for markdown in app.markdown]
