"""The run folder, where the stages meet: the name of every file in it, and their readers and writers.

    preprocess -> metadata.json, vocabulary.json, captions.json, features_<encoder>.{bin,index,json}
    train      -> model.keras, last_epoch*.keras, training_state*.json, history.csv, training_curves.png
    package    -> a package folder: model.keras (and model_2.keras, ... when it packs an ensemble),
                  vocabulary.json, metadata.json, encoder_check/

Every script finds these files by the names below; docs/run_folder.md describes each of them.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from config import Config, resolved_config
from inputs.json_files import read_json, write_json
from inputs.vocabulary import Vocabulary

METADATA, VOCABULARY, CAPTIONS = "metadata.json", "vocabulary.json", "captions.json"
# The kept decoder: the best of the last training phase (by dev CIDEr-D, or --monitor).
BEST_MODEL = "model.keras"
HISTORY, CURVES, TENSORBOARD = "history.csv", "training_curves.png", "tensorboard"
# Self-critical training keeps the cross-entropy model as XE_MODEL and writes its own best into BEST_MODEL.
XE_MODEL = "model_xe.keras"
# Encoder fine-tuning keeps the run's own encoder beside its decoder, and the run before it in FROZEN_DIR.
ENCODER_MODEL, LAST_ENCODER, FROZEN_DIR = "encoder.keras", "last_epoch_encoder.keras", "frozen_encoder"
# Each training phase's resumable checkpoint and state file, in the order the phases run.
PHASE_FILES = {"xe": ("last_epoch.keras", "training_state.json"),
               "fine_tune": ("last_epoch_fine_tune.keras", "training_state_fine_tune.json"),
               "scst": ("last_epoch_scst.keras", "training_state_scst.json")}
(LAST_MODEL, STATE), (LAST_FINE_TUNE_MODEL, FINE_TUNE_STATE), (LAST_SCST_MODEL, SCST_STATE) = PHASE_FILES.values()
# A package of several decoders (an ensemble of runs on one encoder and vocabulary) lists their files in
# its metadata under PACKAGE_DECODERS: BEST_MODEL, then model_2.keras, model_3.keras, ...
PACKAGE_DECODERS = "decoders"
# A package's reference images and their features, for the encoder check.
ENCODER_CHECK_DIR, ENCODER_CHECK_FEATURES = "encoder_check", "features.npy"
# The scripts whose resolved configuration a run keeps, as config_<script>.json.
CONFIG_SCRIPTS = ("preprocess", "train", "train_fine_tune", "train_scst")
# The settings preprocess fixed for a run, as metadata.json records them under their Config field names.
RUN_SETTINGS = ("encoder", "encoder_seed", "features", "min_word_count")
# Where a fresh cross-entropy training moves the record of the training before it (a number follows
# when that folder exists: previous_training_2, ...).
PREVIOUS_TRAINING = "previous_training"
# evaluate.py's files (evaluation_<split>....json, report_<split>....html/png: evaluation_file) start so.
EVALUATION_PREFIXES = ("evaluation_", "report_")


def package_decoder_file(index: int) -> str:
    """The file of a package's decoder number `index` (0 is BEST_MODEL, as in a run)."""
    return BEST_MODEL if index == 0 else f"model_{index + 1}.keras"


def is_extra_package_decoder(name: str) -> bool:
    """Whether `name` is the file of a package's second, third, ... decoder (model_2.keras, ...)."""
    return re.fullmatch(r"model_[2-9]\d*\.keras", name) is not None


def decoder_files(metadata: dict, model_file: str = BEST_MODEL, where: str = METADATA) -> List[str]:
    """The decoder files a run or package folder captions with: `model_file`, or every decoder a package of
    several lists (when `model_file` is the kept model). A damaged list raises ValueError."""
    listed = metadata.get(PACKAGE_DECODERS)
    if not listed or model_file != BEST_MODEL:
        return [model_file]
    if not isinstance(listed, list) or listed != [package_decoder_file(index) for index in range(len(listed))]:
        raise ValueError(f"{where}: '{PACKAGE_DECODERS}' must list model.keras, model_2.keras, ... in "
                         f"order, got {listed!r}; the package is damaged: copy or package it again")
    return list(listed)


def config_file(script: str) -> str:
    """The file in which `script` ("preprocess", "train", "train_scst", ...) saves its configuration."""
    return f"config_{script}.json"


def save_config(config: Config, run_dir: str, script: str) -> str:
    """Writes the resolved configuration of one script's run as JSON into the run folder. A training
    script records the preprocessing settings the run folder was made with (RUN_SETTINGS, from its
    metadata), not its own flags': train.py --decoder attention extracts spatial features without
    --features spatial, and a folder preprocessed before keeps its encoder whatever --encoder says."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, config_file(script))
    values = resolved_config(config, run_dir)
    if script != "preprocess" and os.path.exists(os.path.join(run_dir, METADATA)):
        metadata = read_metadata(run_dir)
        values.update({key: metadata[key] for key in RUN_SETTINGS if key in metadata})
    write_json(path, values, indent=2)
    return path


def evaluation_file(run_dir: str, split: str, beam_size: int = 1, length_penalty: float = 0.0,
                    no_repeat_ngram_size: int = 0, block_bad_endings: bool = False, model_file: str = BEST_MODEL,
                    ensemble_size: int = 1, ensemble_mean: Optional[str] = None,
                    guidance=None, kind: str = "evaluation") -> str:
    """Where evaluate.py writes the scores of `split` decoded so (`kind` "report": the stem of its report's
    .html and .png): evaluation_<split>[_beam<K>][_lp<P>][_norepeat<N>][_noendings][_<model file>]
    [_ensemble<N>][_arithmetic][_guided<floor>k<constraints>m<margin>s<sure>].json; `guidance` (the tag
    policy's settings: floor, constraints, margin, sure) None for unguided captions."""
    suffix = "" if beam_size == 1 else f"_beam{beam_size}"
    suffix += f"_lp{length_penalty:g}" if length_penalty and beam_size > 1 else ""
    suffix += f"_norepeat{no_repeat_ngram_size}" if no_repeat_ngram_size else ""
    suffix += "_noendings" if block_bad_endings else ""
    suffix += f"_{os.path.splitext(model_file)[0]}" if model_file != BEST_MODEL else ""
    suffix += f"_ensemble{ensemble_size}" if ensemble_size > 1 else ""
    suffix += "_arithmetic" if ensemble_mean == "arithmetic" else ""
    if guidance is not None:
        suffix += f"_guided{guidance.floor:g}k{guidance.constraints}m{guidance.margin:g}s{guidance.sure:g}"
    prefix = {"evaluation": EVALUATION_PREFIXES[0], "report": EVALUATION_PREFIXES[1]}[kind]
    return os.path.join(run_dir, f"{prefix}{split}{suffix}" + (".json" if kind == "evaluation" else ""))


def read_metadata(run_dir: str) -> dict:
    return read_json(os.path.join(run_dir, METADATA))


def load_run(run_dir: str) -> Tuple[dict, dict, Vocabulary]:
    """What preprocess wrote: (metadata, captions per split, vocabulary)."""
    return read_metadata(run_dir), read_json(os.path.join(run_dir, CAPTIONS)), load_vocabulary(run_dir)


def load_vocabulary(run_dir: str) -> Vocabulary:
    return Vocabulary.load(os.path.join(run_dir, VOCABULARY))


def read_state(run_dir: str, phase: str) -> Optional[dict]:
    """The training state file of `phase` ("xe", "fine_tune", "scst"), or None when that phase never ran here."""
    path = os.path.join(run_dir, PHASE_FILES[phase][1])
    return read_json(path) if os.path.exists(path) else None


def latest_training_state(run_dir: str) -> dict:
    """The state of the last phase that trained the run's model.keras ({} for none).

    Phases run in PHASE_FILES' order, and a fine-tuning moves any earlier self-critical state into
    FROZEN_DIR, so the last phase with a state file in the folder is the latest."""
    for phase in reversed(PHASE_FILES):
        state = read_state(run_dir, phase)
        if state is not None:
            return {"phase": phase, **state}
    return {}


def later_phase_files(run_dir: str) -> List[str]:
    """The files of the phases that continued the run's cross-entropy model (self-critical training,
    encoder fine-tuning's checkpoints and state) present in the run folder."""
    later = [XE_MODEL, LAST_ENCODER, config_file("train_scst"), config_file("train_fine_tune")]
    later += [name for phase in ("fine_tune", "scst") for name in PHASE_FILES[phase]]
    return [name for name in later if os.path.exists(os.path.join(run_dir, name))]


def training_record(run_dir: str) -> List[str]:
    """What the training phases and evaluate.py wrote into the run folder: the models and checkpoints,
    states, configurations, history and curves, evaluations and reports. Not the features, vocabulary,
    captions, metadata, nor a fine-tuned encoder.keras and frozen_encoder/: those the run's features need."""
    names = [BEST_MODEL, HISTORY, CURVES, TENSORBOARD, config_file("train"), *PHASE_FILES["xe"]]
    kept = [name for name in names if os.path.exists(os.path.join(run_dir, name))] + later_phase_files(run_dir)
    return kept + sorted(name for name in os.listdir(run_dir) if name.startswith(EVALUATION_PREFIXES))


def move_previous_training(run_dir: str) -> Optional[str]:
    """Moves training_record(run_dir) into a new PREVIOUS_TRAINING folder of the run folder, so a fresh
    training neither reuses nor destroys it; that folder, or None when there was nothing to move."""
    names = training_record(run_dir)
    if not names:
        return None
    folder, number = os.path.join(run_dir, PREVIOUS_TRAINING), 1
    while os.path.exists(folder):
        number += 1
        folder = os.path.join(run_dir, f"{PREVIOUS_TRAINING}_{number}")
    os.makedirs(folder)
    for name in names:
        os.replace(os.path.join(run_dir, name), os.path.join(folder, name))
    return folder
