"""A web page to caption your own photos with the pretrained captioner or a run you trained.

    streamlit run app.py                          # http://localhost:8501
    streamlit run app.py --server.port 8600       # another port
    CAPTION_RUNS_DIR=/path/to/runs streamlit run app.py
    CAPTION_WEIGHTS=PATH streamlit run app.py     # other weights for the package's encoder (not needed:
                                                  # EfficientNet-Lite0's come installed, nothing is downloaded)
    CAPTION_CLASSIFIER_WEIGHTS=PATH CAPTION_CLASS_NAMES=PATH streamlit run app.py   # guidance's files, where
                                                  # they are not the encoder's file and the repository's data/

Offers the pretrained package first (pretrained/flickr8k_efficientnet_lite0, or $CAPTION_PRETRAINED_DIR), then the trained runs
under `runs/` (or $CAPTION_RUNS_DIR); captions uploaded images or images of the bundled sample with
the greedy caption (guided by the image's ImageNet tags, which it shows, unless unticked) and the best
beams (and, for an attention run, where it looked for each word), and shows the encoder and weights.
For the package it runs the encoder check and warns when it fails.
The model and encoder of a run are loaded once and cached; a caption already computed for the same
image bytes and settings is reused at once.
"""
from __future__ import annotations

import io
import os
import tempfile
from typing import List

import streamlit as st

from config import PRETRAINED_DIR, PROJECT_DIR, SAMPLE_DATA_DIR, Config, quiet_tensorflow

quiet_tensorflow()

from inputs.encoders import ENCODERS  # noqa: E402
from inputs.images import IMAGE_SUFFIXES  # noqa: E402
from inputs.run_folder import BEST_MODEL, METADATA, read_metadata  # noqa: E402
from serving.captioner import Captioner  # noqa: E402
from serving.encoder_check import ENCODER_CHECK_THRESHOLD, encoder_warning  # noqa: E402
from tagging.policy import PolicySettings  # noqa: E402

RUNS_DIR = os.environ.get("CAPTION_RUNS_DIR", os.path.join(PROJECT_DIR, "runs"))
PACKAGE_DIR = os.environ.get("CAPTION_PRETRAINED_DIR", PRETRAINED_DIR)
PACKAGE_WEIGHTS = os.environ.get("CAPTION_WEIGHTS", "")
# Guided decoding's ImageNet classifier and class names, where they are not beside the encoder's weights.
CLASSIFIER_WEIGHTS = os.environ.get("CAPTION_CLASSIFIER_WEIGHTS", "auto")
CLASS_NAMES = os.environ.get("CAPTION_CLASS_NAMES", "auto")
SAMPLE_IMAGES = os.path.join(SAMPLE_DATA_DIR, "Flicker8k_Dataset")
UPLOAD_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]
GUIDE_BY_DEFAULT, GUIDE_SETTINGS = Config().guide == "tags", PolicySettings.of(Config())


def run_folders(runs_dir: str) -> List[str]:
    """Sub-folders of `runs_dir` that hold a preprocessed or trained run."""
    if not os.path.isdir(runs_dir):
        return []
    return sorted(name for name in os.listdir(runs_dir)
                  if os.path.isfile(os.path.join(runs_dir, name, METADATA))
                  or os.path.isfile(os.path.join(runs_dir, name, BEST_MODEL)))


def weights_for(run_dir: str) -> str:
    return PACKAGE_WEIGHTS if run_dir == PACKAGE_DIR else ""


@st.cache_resource(show_spinner="Loading the model and the image encoder...", max_entries=4)
def load_captioner(run_dir: str, weights: str = "", guide: bool = False) -> Captioner:
    """`weights`: the encoder weights when not the run's own (the package's, offline). `guide`: with the
    encoder's ImageNet classifier (guided decoding); its `guide_note` says why when the run cannot be guided."""
    captioner = Captioner(run_dir, weights=weights)
    captioner.guide_note = ""
    if guide:
        try:  # the page captions on without guidance, and says why
            captioner.guide_note = captioner.guide_by_tags(GUIDE_SETTINGS, CLASSIFIER_WEIGHTS, CLASS_NAMES)
        except ValueError as error:
            captioner.guide_note = f"no guidance by ImageNet tags: {error}"
    captioner.encoder()  # built now, so the first caption is not the slow one
    captioner.agreement = captioner.encoder_agreement()  # None for a run without reference images
    return captioner


@st.cache_data(show_spinner=False, max_entries=512)
def caption_image(run_dir: str, image_bytes: bytes, suffix: str, beam_size: int, top: int, guide: bool,
                  threshold: float) -> dict:
    """Greedy caption (guided by the image's tags when `guide`), its tags, and the `top` best beams of one
    image; or the reason it cannot be read."""
    captioner = load_captioner(run_dir, weights_for(run_dir), guide)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "image" + suffix)
        with open(path, "wb") as handle:
            handle.write(image_bytes)
        _, features, errors = captioner.image_features([path])
        if errors:
            return {"error": errors[0].kind}
        captions, guidance = captioner.captions_and_guidance(features, beam_size=1, guide_threshold=threshold)
        result = {"greedy": captions[0], "beams": captioner.top_captions(features, top, beam_size=beam_size)[0]}
        if guidance:
            result["tags"] = guidance[0].tags
            result["guided_by"] = [words for words, _ in guidance[0].constraints] if guidance[0].guided else []
        if captioner.has_attention:
            png = io.BytesIO()
            captioner.attention_picture(path, features[0], captions[0]).save(png, format="PNG")
            result["attention_map"] = png.getvalue()
    return result


def show_caption(name: str, image_bytes: bytes, run_dir: str, beam_size: int, top: int, guide: bool,
                 threshold: float) -> None:
    suffix = os.path.splitext(name)[1].lower() or ".jpg"
    result = caption_image(run_dir, image_bytes, suffix, beam_size, top, guide, threshold)
    left, right = st.columns([1, 2])
    if "error" in result:
        right.error(f"{name}: cannot caption this file ({result['error']}). Upload a JPEG or PNG photo.")
        return
    left.image(image_bytes, caption=name, width="stretch")
    right.markdown(f"**{result['greedy']}**")
    guided = result.get("guided_by")
    right.caption("greedy caption" + (f", guided to say {' and '.join(guided)}" if guided else ""))
    if "tags" in result:
        right.caption("ImageNet tags: " + " · ".join(f"{label} {probability:.2f}"
                                                     for label, probability in result["tags"]))
    lines = [f"{rank}. {text}  (log-probability {log_probability:.2f})"
             for rank, (text, log_probability) in enumerate(result["beams"], 1)]
    unguided = " (unguided)" if "tags" in result else ""
    right.text(f"best {len(lines)} of beam search{unguided}, beam {beam_size}:\n" + "\n".join(lines))
    if "attention_map" in result:
        st.image(result["attention_map"], caption="where the attention decoder looked for each word of the greedy "
                 "caption (bright: most attended; the label gives the largest weight)", width="stretch")


def package_choice() -> str:
    """The package's entry in the list of captioners, naming the encoder it was trained on."""
    try:
        metadata = read_metadata(PACKAGE_DIR)
    except (ValueError, OSError):  # a damaged package: loading it below says what is wrong, in one line
        return "pretrained captioner"
    encoder = metadata.get("encoder", "")
    name = ENCODERS[encoder].model_class if encoder in ENCODERS else encoder
    return f"pretrained captioner ({metadata.get('dataset', '?').capitalize()}, {name})"


def main() -> None:
    st.set_page_config(page_title="Image captioner", layout="wide")
    st.title("Caption your photos")
    has_package = os.path.isfile(os.path.join(PACKAGE_DIR, BEST_MODEL))
    package = package_choice() if has_package else None
    runs = ([package] if has_package else []) + run_folders(RUNS_DIR)
    if not runs:
        st.info(f"No trained runs yet in {RUNS_DIR}. Train one first, e.g. `python train.py` "
                "(the bundled sample), then reload this page.")
        return
    run = st.sidebar.selectbox("Captioner", runs)
    beam_size = st.sidebar.slider("Beam width", 1, 10, 3)
    top = st.sidebar.slider("Beams shown", 1, beam_size, min(3, beam_size))
    guide = st.sidebar.checkbox("Guide by ImageNet tags", value=GUIDE_BY_DEFAULT,
                                help="the encoder's ImageNet classifier tags the photo; a confident tag that the "
                                     "caption misses makes the caption say it (docs/guided_decoding.md)")
    threshold = st.sidebar.slider("Word probability that guides (the floor)", 0.05, 1.0, GUIDE_SETTINGS.floor, 0.05,
                                  disabled=not guide)
    run_dir = PACKAGE_DIR if run == package else os.path.join(RUNS_DIR, run)
    try:
        captioner = load_captioner(run_dir, weights_for(run_dir), guide)
    except (ValueError, OSError) as error:
        hint = (" (offline: start the page with CAPTION_WEIGHTS=/path/to/weights.h5)"
                if run == package and "--weights PATH" in str(error) else "")
        st.error(f"{run if run == package else 'Run ' + run} cannot caption: {error}{hint}")
        return
    if captioner.guide_note:
        st.sidebar.warning(captioner.guide_note)
    weights = os.path.basename(str(captioner.weights))
    if captioner.fine_tuned:
        weights = f"fine-tuned in this run ({captioner.fine_tuned['file']}), from {weights}"
    st.sidebar.markdown(f"**Encoder:** {captioner.metadata['encoder']}  \n**Weights:** {weights}")
    if captioner.agreement is not None:
        st.sidebar.caption(f"encoder check: cosine {captioner.agreement:.4f} with the training encoder "
                           f"(threshold {ENCODER_CHECK_THRESHOLD})")
        if captioner.agreement < ENCODER_CHECK_THRESHOLD:
            st.warning(encoder_warning(captioner, captioner.agreement))
    if captioner.weights == "none":
        st.warning("This run's encoder is UNTRAINED (--weights none): its captions rest on colour and layout "
                   "only. Train with ImageNet weights for real photos.")

    uploads = st.file_uploader("Upload photos", type=UPLOAD_TYPES, accept_multiple_files=True)
    samples = sorted(os.listdir(SAMPLE_IMAGES))[:20] if os.path.isdir(SAMPLE_IMAGES) else []
    sample = st.selectbox("...or pick an image of the bundled sample", ["(none)"] + samples)
    chosen = [(upload.name, upload.getvalue()) for upload in uploads or []]
    if sample != "(none)":
        with open(os.path.join(SAMPLE_IMAGES, sample), "rb") as handle:
            chosen.append((sample, handle.read()))
    if not chosen:
        st.caption("Upload one or more photos to caption them.")
    for name, image_bytes in chosen:
        show_caption(name, image_bytes, run_dir, beam_size, top, guide, threshold)


main()
