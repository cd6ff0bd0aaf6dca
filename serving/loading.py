"""Loading a run's decoders for captioning: a model file in any stored precision, the checks an ensemble's
runs pass, and the size of what is written (packages, exported models)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from inputs.vocabulary import Vocabulary


def folder_size(path: str) -> int:
    """Bytes on disk of a file, or of every file under a folder (a package, an exported model)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def with_dtype(model, dtype: str):
    """A copy of a Functional model whose layers keep their weights in `dtype` (float16 halves a stored
    model; decoding runs in float32)."""
    import keras

    def replace(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                return {**node, "config": {**node["config"], "name": dtype}}
            return {key: replace(value) for key, value in node.items()}
        return [replace(value) for value in node] if isinstance(node, list) else node

    copy = keras.Model.from_config(replace(model.get_config()))
    copy.set_weights([np.asarray(weights).astype(dtype) for weights in model.get_weights()])
    return copy


def load_decoder(path: str):
    """A model (a decoder, or a run's fine-tuned encoder) from a `.keras` file, in float32 whatever precision
    its weights were stored in."""
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # a damaged zip or weights file raises many kinds of error
        raise ValueError(f"{path}: cannot be read as a Keras model ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:160] if str(error) else 'no detail'}); "
                         f"the file is damaged or incomplete: copy or train it again") from None
    if any(weights.dtype != "float32" for weights in model.weights):
        model = with_dtype(model, "float32")
    return model


def fine_tuned_encoder(metadata: dict) -> str:
    """Which fine-tuned encoder a run captions with (its file's digest names it); empty for a frozen encoder."""
    if not metadata.get("fine_tuned_encoder"):
        return ""
    return metadata["feature_store"]["identity"]["weights"]


def check_ensemble(run_dirs: Sequence[str], metadata: Sequence[dict], vocabularies: Sequence[Vocabulary]) -> None:
    """Runs captioning together must read the same features and write the same words."""
    first = run_dirs[0]
    for run_dir, other, vocabulary in zip(run_dirs[1:], metadata[1:], vocabularies[1:]):
        for key, what in (("encoder", "encoder"), ("weights", "encoder weights"), ("features", "feature kind"),
                          ("encoder_seed", "untrained encoder's seed")):
            if key == "encoder_seed" and other["weights"] != "none":
                continue
            if other.get(key, "global") != metadata[0].get(key, "global"):
                raise ValueError(f"ensemble: {run_dir} has {what} {other.get(key, 'global')}, {first} has "
                                 f"{metadata[0].get(key, 'global')}; an ensemble's runs must share encoder and features")
        if fine_tuned_encoder(other) != fine_tuned_encoder(metadata[0]):
            raise ValueError(f"ensemble: {run_dir} has {fine_tuned_encoder(other) or 'the frozen encoder'}, {first} has "
                             f"{fine_tuned_encoder(metadata[0]) or 'the frozen encoder'}; an ensemble's runs must share "
                             f"one encoder (train the other members with --features_from one fine-tuned run)")
        if vocabulary.tokens != vocabularies[0].tokens:
            raise ValueError(f"ensemble: {run_dir} and {first} have different vocabularies; an ensemble's runs must "
                             f"be trained on the same preprocessed data (train each member with --features_from "
                             f"one run folder)")
