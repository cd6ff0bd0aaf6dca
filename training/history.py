"""history.csv, a run's record of every epoch of every training phase: write, append, read."""
from __future__ import annotations

import csv
import os
from typing import Dict, List

# scst_loss and reward: the self-critical phase's policy loss and mean sample reward (CIDEr-D).
HISTORY_COLUMNS = ("epoch", "objective", "loss", "accuracy", "val_loss", "val_accuracy", "scst_loss", "reward",
                   "dev_bleu4", "dev_cider", "seconds")


def write_history(path: str, rows: List[Dict[str, object]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def append_history(path: str, row: Dict[str, object]) -> None:
    if os.path.exists(path):
        with open(path, encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), [])
        if tuple(header) != HISTORY_COLUMNS:  # written with other columns: rewrite it with these
            write_history(path, read_history(path))
    else:
        write_history(path, [])
    with open(path, "a", encoding="utf-8", newline="") as handle:
        csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS).writerow({key: row.get(key, "") for key in HISTORY_COLUMNS})


def read_history(path: str) -> List[Dict[str, object]]:
    """The rows of history.csv: the epoch as a whole number, the other numbers as floats; rows without an
    objective are cross-entropy ("xe"). Rows read here and written back keep their epochs whole."""
    with open(path, encoding="utf-8", newline="") as handle:
        return [{"objective": "xe", **{key: _value(key, value) for key, value in row.items()
                                       if key and value not in ("", None)}}
                for row in csv.DictReader(handle)]


def _value(column: str, text: str) -> object:
    if column == "objective":
        return text
    return int(float(text)) if column == "epoch" else float(text)
