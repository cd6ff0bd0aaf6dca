"""PyTorch weight files (`.pth`, `.pt`) read without PyTorch, as NumPy arrays.

A `.pth` file is a pickle, and a pickle is a program: loading one with plain `pickle.load` runs
whatever functions it names. This reader lets a pickle build only what a state dict is made of:
ordered dictionaries, tensors (`torch._utils._rebuild_tensor_v2` over a typed storage) and the
storage types themselves. Any other global in the file stops the reading with one line naming it.

Both of PyTorch's formats are read: the zip archive of `torch.save` since PyTorch 1.6
(`archive/data.pkl` beside one file per storage) and the older single stream (magic number,
protocol, system information, the pickle, the storage keys, then each storage's raw bytes).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import BinaryIO, Callable, Dict

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# PyTorch's storage types and the NumPy types of their elements (little-endian, as both formats store them).
STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": None,
                  "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
                  "ByteStorage": "u1", "BoolStorage": "?"}


class UnsafePickle(ValueError):
    """A weight file whose pickle names something other than tensors and ordered dictionaries."""


class _Tensor:
    """A tensor as the pickle describes it, before its storage's bytes are read."""

    def __init__(self, storage_key: str, offset: int, shape: tuple, stride: tuple):
        self.storage_key, self.offset, self.shape, self.stride = storage_key, offset, tuple(shape), tuple(stride)


def _rebuild_tensor(storage_key, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    *metadata):
    return _Tensor(storage_key, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream: BinaryIO, path: str, on_storage: Callable[[tuple], str]):
        super().__init__(stream)
        self.path, self.on_storage = path, on_storage

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return f"storage:{name}"
        raise UnsafePickle(f"{self.path}: refused to load: its pickle names {module}.{name}, and a weight file "
                           f"may hold only tensors and ordered dictionaries (a pickle can run any code it names)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafePickle(f"{self.path}: refused to load: an unknown persistent reference {str(pid)[:80]}")
        return self.on_storage(pid)


def _storage_dtype(path: str, storage_type) -> str:
    name = storage_type.split(":", 1)[1] if isinstance(storage_type, str) else ""
    dtype = STORAGE_DTYPES.get(name)
    if dtype is None:
        raise ValueError(f"{path}: tensors of type {name or storage_type} cannot be read here")
    return dtype


def _as_array(tensor: _Tensor, storage: np.ndarray) -> np.ndarray:
    if not tensor.shape:
        return storage[tensor.offset].copy()
    strides = tuple(step * storage.itemsize for step in tensor.stride)
    view = np.lib.stride_tricks.as_strided(storage[tensor.offset:], tensor.shape, strides, writeable=False)
    return np.array(view)


def _collect(path: str, loaded, storages: Dict[str, np.ndarray]) -> "collections.OrderedDict[str, np.ndarray]":
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: holds a {type(loaded).__name__}, not a state dict of named tensors")
    arrays = collections.OrderedDict()
    for name, tensor in loaded.items():
        if isinstance(tensor, _Tensor):
            arrays[str(name)] = _as_array(tensor, storages[tensor.storage_key])
    return arrays


def _read_legacy(path: str, stream: BinaryIO):
    """The single-stream format of torch.save before PyTorch 1.6."""
    def plain(pid):
        raise UnsafePickle(f"{path}: refused to load: a storage reference outside the state dict")

    # Every pickle of the file goes through the restricted reader, the small ones around the state dict too.
    header = [_RestrictedUnpickler(stream, path, plain).load() for _ in range(3)]  # magic, protocol, system
    if header[0] != LEGACY_MAGIC or not isinstance(header[2], dict) or not header[2].get("little_endian", True):
        raise ValueError(f"{path}: not a little-endian PyTorch weight file")
    sizes: Dict[str, tuple] = {}

    def on_storage(pid):
        _, storage_type, key, _, elements = pid[:5]
        sizes[str(key)] = (_storage_dtype(path, storage_type), int(elements))
        return str(key)

    loaded = _RestrictedUnpickler(stream, path, on_storage).load()
    keys = _RestrictedUnpickler(stream, path, plain).load()
    storages = {}
    for key in keys:
        dtype, _ = sizes[str(key)]
        (count,) = struct.unpack("<q", stream.read(8))
        data = stream.read(count * np.dtype(dtype).itemsize)
        if len(data) != count * np.dtype(dtype).itemsize:
            raise ValueError(f"{path}: truncated (storage {key} ends early); download or install it again")
        storages[str(key)] = np.frombuffer(data, dtype)
    return _collect(path, loaded, storages)


def _read_zip(path: str, archive: zipfile.ZipFile):
    """The zip format of torch.save since PyTorch 1.6: <root>/data.pkl and <root>/data/<key>."""
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise ValueError(f"{path}: a zip file, but not one PyTorch wrote (no single data.pkl)")
    root = pickles[0][:-len("data.pkl")]
    storages: Dict[str, np.ndarray] = {}

    def on_storage(pid):
        _, storage_type, key = pid[:3]
        key = str(key)
        if key not in storages:
            storages[key] = np.frombuffer(archive.read(f"{root}data/{key}"), _storage_dtype(path, storage_type))
        return key

    loaded = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path, on_storage).load()
    return _collect(path, loaded, storages)


def read_state_dict(path: str) -> "collections.OrderedDict[str, np.ndarray]":
    """The named tensors of a PyTorch weight file, in the file's order; ValueError (UnsafePickle for a pickle
    that names anything else) with one line when the file is missing, damaged or not a state dict."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such weight file")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _read_zip(path, archive)
        with open(path, "rb") as stream:
            return _read_legacy(path, stream)
    except UnsafePickle:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, struct.error, zipfile.BadZipFile, TypeError,
            AttributeError, IndexError) as error:
        raise ValueError(f"{path}: not a readable PyTorch weight file ({type(error).__name__}: "
                         f"{str(error)[:120]})") from None
