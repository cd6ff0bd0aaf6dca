"""An append-only, crash-safe store of image features keyed by image name.

Two files: `<name>.bin`, raw float rows (a spatial feature map is one flattened row), memory-mapped for reading; `<name>.index`, one image name
per line, row order, with an optional note after a tab (e.g. how the image had to be converted).
A batch is written as rows first (flushed to disk), then names; on opening, rows beyond the last
complete name are cut off. An interrupted extraction therefore loses at most
the batch in flight, and never leaves a row that a name points to half written.
"""
from __future__ import annotations

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
        header = {"feature_dim": self.feature_dim, "dtype": self.dtype.name, **(identity or {})}
        if len(self.feature_shape) > 1:
            header["feature_shape"] = list(self.feature_shape)
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

    def matrix(self) -> np.ndarray:
        """All features, shape (images, *feature_shape), as a read-only memory map (read only when indexed)."""
        if not self.names:
            return np.zeros((0, *self.feature_shape), self.dtype)
        return np.memmap(self.rows_path, dtype=self.dtype, mode="r", shape=(len(self.names), *self.feature_shape))


def feature_shape(metadata: dict) -> tuple[int, ...]:
    """(feature_dim,) for a run with one vector per image, (regions, channels) for spatial features."""
    return tuple(metadata.get("feature_shape", [metadata["feature_dim"]]))


def open_features(run_dir: str, metadata: dict) -> tuple[np.ndarray, Dict[str, int]]:
    """The run's features as (memory map, image name -> row), as recorded in its metadata."""
    store_info = metadata["feature_store"]
    store = FeatureStore(run_dir, store_info["name"], feature_shape(metadata), store_info["dtype"],
                         store_info["identity"])
    return store.matrix(), dict(store.rows)
