"""An append-only, crash-safe store of image features keyed by image name.

Two files: `<name>.bin`, raw float rows (a spatial feature map is one flattened row), read row by
row on demand (`FeatureRows`); `<name>.index`, one image name
per line, row order, with an optional note after a tab (e.g. how the image had to be converted).
A batch is written as rows first (flushed to disk), then names; on opening, rows beyond the last
complete name are cut off. An interrupted extraction therefore loses at most
the batch in flight, and never leaves a row that a name points to half written.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, Iterable, List, Sequence

import numpy as np


class FeatureStore:
    def __init__(self, directory: str, name: str, feature_shape: int | Sequence[int], dtype: str = "float32",
                 identity: Dict[str, str] | None = None):
        """Opens (creating if needed) the store; an existing store made by another encoder is replaced.

        `feature_shape`: the size of one image's vector, or the (regions, channels) of its feature map.
        """
        os.makedirs(directory, exist_ok=True)
        self.rows_path = os.path.join(directory, name + ".bin")
        self.index_path = os.path.join(directory, name + ".index")
        self.header_path = os.path.join(directory, name + ".json")
        self.feature_shape = (feature_shape,) if isinstance(feature_shape, int) else tuple(feature_shape)
        self.feature_dim = int(np.prod(self.feature_shape))
        self.dtype = np.dtype(dtype)
        self.identity = dict(identity or {})
        header = {"feature_dim": self.feature_dim, "dtype": self.dtype.name, **self.identity}
        if len(self.feature_shape) > 1:
            header["feature_shape"] = list(self.feature_shape)
        self.header = header
        if os.path.exists(self.header_path):
            with open(self.header_path, encoding="utf-8") as handle:
                if json.load(handle) != header:
                    self.replaced = True
                    for path in (self.rows_path, self.index_path):
                        if os.path.exists(path):
                            os.remove(path)
        with open(self.header_path, "w", encoding="utf-8") as handle:
            json.dump(header, handle)
        lines = self._recover()
        self.names = [line.split("\t")[0] for line in lines]
        self.notes = {name: note for name, _, note in (line.partition("\t") for line in lines) if note}
        self.rows = {name: row for row, name in enumerate(self.names)}

    replaced = False

    def _recover(self) -> List[str]:
        lines: List[str] = []
        if os.path.exists(self.index_path):
            with open(self.index_path, encoding="utf-8") as handle:
                text = handle.read()
            lines = text.split("\n")[:-1]  # a last line with no newline was cut mid-write
        row_bytes = self.feature_dim * self.dtype.itemsize
        stored_rows = os.path.getsize(self.rows_path) // row_bytes if os.path.exists(self.rows_path) else 0
        lines = lines[:stored_rows]
        with open(self.rows_path, "ab") as handle:
            handle.truncate(len(lines) * row_bytes)
        with open(self.index_path, "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
        return lines

    def __contains__(self, name: str) -> bool:
        return name in self.rows

    def __len__(self) -> int:
        return len(self.names)

    def append(self, names: Iterable[str], vectors: np.ndarray, notes: Dict[str, str] | None = None) -> None:
        names, notes = list(names), notes or {}
        if len(names) != len(vectors) or (len(vectors) and vectors.shape[1:] != self.feature_shape):
            raise ValueError(f"expected {len(names)} features of shape {self.feature_shape}, got {vectors.shape}")
        with open(self.rows_path, "ab") as handle:
            handle.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        with open(self.index_path, "a", encoding="utf-8") as handle:
            handle.write("".join(name + ("\t" + notes[name] if name in notes else "") + "\n" for name in names))
            handle.flush()
            os.fsync(handle.fileno())
        for name in names:
            self.rows[name] = len(self.names)
            self.names.append(name)
        self.notes.update(notes)

    def matrix(self) -> "FeatureRows":
        """All features, shape (images, *feature_shape), read from the file only when indexed."""
        return FeatureRows(self.rows_path, self.dtype, (len(self.names), *self.feature_shape))


def shard_name(name: str, index: int, count: int) -> str:
    return f"{name}.shard{index}of{count}"


def merge_shards(store: FeatureStore) -> List[tuple]:
    """Appends the rows of every shard store beside `store` (made by `preprocess.py --shard I/N`) that
    `store` does not hold yet, then deletes the shard's files. Safe to interrupt: a second run skips
    the rows already merged. Returns (shard file, images merged) pairs."""
    directory, name = os.path.dirname(store.rows_path), os.path.basename(store.rows_path)[:-len(".bin")]
    merged = []
    for index_path in sorted(glob.glob(os.path.join(directory, glob.escape(name) + ".shard*of*.index"))):
        shard = os.path.basename(index_path)[:-len(".index")]
        with open(os.path.join(directory, shard + ".json"), encoding="utf-8") as handle:
            if json.load(handle) != store.header:
                raise ValueError(f"{os.path.join(directory, shard)}: made with other encoder settings than "
                                 f"{store.header_path}; delete its files or extract the shard again")
        part = FeatureStore(directory, shard, store.feature_shape, store.dtype.name, store.identity)
        rows = part.matrix()
        new = [row for row, image in enumerate(part.names) if image not in store]
        for start in range(0, len(new), 256):
            chunk = new[start:start + 256]
            store.append([part.names[row] for row in chunk], rows[chunk],
                         {part.names[row]: part.notes[part.names[row]] for row in chunk if part.names[row] in part.notes})
        del rows  # closes the shard's file before it is deleted
        for path in (part.rows_path, part.index_path, part.header_path):
            os.remove(path)
        merged.append((shard, len(new)))
    return merged


class FeatureRows:
    """The rows of a store, read from its file on demand: `rows[i]`, `rows[[i, j, ...]]`, `rows[a:b]`.

    Unlike a memory map, rows already read do not stay mapped into the process, so resident memory
    does not grow with the number of images read in an epoch (a memory-mapped 2 GB store grows the
    process by 2 GB over one pass); repeated reads are still served from the OS page cache.
    """

    def __init__(self, path: str, dtype, shape: Sequence[int]):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), tuple(shape)
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self._file = open(path, "rb") if self.shape[0] else None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self._read(np.array([index]))[0]
        if isinstance(index, slice):
            return self._read(np.arange(*index.indices(len(self))))
        return self._read(np.asarray(index, dtype=np.int64).reshape(-1))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        everything = self[:]
        return everything if dtype is None else everything.astype(dtype)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"feature row out of range (the store has {len(self)} rows)")
        rows = np.where(rows < 0, rows + len(self), rows)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        flat = out.reshape(len(rows), int(np.prod(self.shape[1:])))
        order = np.argsort(rows, kind="stable")
        start = 0
        while start < len(order):  # one read per run of consecutive rows
            end = start + 1
            while end < len(order) and rows[order[end]] <= rows[order[end - 1]] + 1:
                end += 1
            first, last = rows[order[start]], rows[order[end - 1]]
            data = os.pread(self._file.fileno(), int(last - first + 1) * self.row_bytes, int(first) * self.row_bytes)
            block = np.frombuffer(data, self.dtype).reshape(int(last - first + 1), -1)
            flat[order[start:end]] = block[rows[order[start:end]] - first]
            start = end
        return out

    def __del__(self):
        if getattr(self, "_file", None):
            self._file.close()


def feature_shape(metadata: dict) -> tuple[int, ...]:
    """(feature_dim,) for a run with one vector per image, (regions, channels) for spatial features."""
    return tuple(metadata.get("feature_shape", [metadata["feature_dim"]]))


def check_features_written(run_dir: str, metadata: dict) -> None:
    """Refuses a run whose encoder fine-tuning has not yet replaced its features with the fine-tuned ones."""
    tuned = metadata.get("fine_tuned_encoder")
    if tuned and not tuned.get("features_written"):
        raise ValueError(f"{run_dir}: its encoder is being fine-tuned, and the fine-tuned encoder's features are not "
                         f"written yet: finish with python train.py --run_dir {run_dir} --fine_tune_encoder --resume")


def open_features(run_dir: str, metadata: dict) -> tuple[FeatureRows, Dict[str, int]]:
    """The run's features (read on demand) and image name -> row, as recorded in its metadata."""
    check_features_written(run_dir, metadata)
    store_info = metadata["feature_store"]
    store = FeatureStore(run_dir, store_info["name"], feature_shape(metadata), store_info["dtype"],
                         store_info["identity"])
    return store.matrix(), dict(store.rows)
