"""Images -> features in a feature store, batch by batch, with a count of the images skipped and why.

preprocess.py extracts a dataset's features here, and encoder fine-tuning writes the fine-tuned
encoder's features the same way.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from typing import Dict, List

from inputs.encoders import encode_pixels
from inputs.feature_store import FeatureStore
from inputs.images import load_batches


def extract(store: FeatureStore, paths: List[str], names: List[str], encoder_model, input_size: int,
            batch_size: int) -> Dict[str, List[str]]:
    """Encodes the images at `paths` into `store` under `names`; returns the skipped ones by reason."""
    from tqdm import tqdm

    skipped: Dict[str, List[str]] = defaultdict(list)
    with tqdm(total=len(names), unit="img", desc="features", disable=not names) as progress:
        for indices, pixels, failures, conversions in load_batches(paths, input_size, batch_size):
            store.append([names[i] for i in indices], encode_pixels(encoder_model, pixels),
                         {names[index]: kind for index, kind in conversions})
            for index, error in failures:
                skipped[error.kind].append(names[index])
            progress.update(len(indices) + len(failures))
    return skipped


def report(title: str, by_kind: Dict[str, List[str]]) -> None:
    """One line per kind: `skipped 3 image(s): missing file (e.g. a.jpg)`."""
    for kind, names in sorted(by_kind.items()):
        print(f"{title} {len(names)} image(s): {kind} (e.g. {names[0]})", file=sys.stderr)
