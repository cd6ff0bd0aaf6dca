"""Reading caption files: Flickr8k/Flickr30k token files, the Kaggle CSV, Karpathy split files and
your own tables of image/caption pairs (CSV, TSV, JSON Lines). Each parser returns raw captions per
image; a file that cannot be read raises DatasetError naming the file and the line."""
from __future__ import annotations

import csv
import json
import os
import posixpath
from typing import Dict, List, Optional

from inputs.json_files import read_json

SPLITS = ("train", "dev", "test")
# Karpathy's "restval" (COCO val2014 images outside his val and test) is training data by convention.
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "dev", "test": "test"}


class DatasetError(ValueError):
    """A dataset folder or caption file that cannot be read; the message names the file and line."""


# "utf-8-sig" also reads files saved on Windows, which begin with a byte-order mark; without it the
# mark would glue itself to the first image's name. Line ends (LF or CRLF) are split alike.
TEXT_ENCODING = "utf-8-sig"


def read_lines(path: str) -> List[str]:
    try:
        with open(path, encoding=TEXT_ENCODING) as handle:
            return handle.read().splitlines()
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def parse_token_file(path: str) -> Dict[str, List[str]]:
    """Reads `IMAGE.jpg#N<TAB>caption` lines into image name -> raw captions."""
    captions: Dict[str, List[str]] = {}
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        key, tab, text = line.partition("\t")
        image, hash_sign, index = key.partition("#")
        if not tab or not hash_sign or not image or not index.strip().isdigit():
            raise DatasetError(f"{path}:{number}: expected 'IMAGE.jpg#N<TAB>caption', got {line[:60]!r}")
        captions.setdefault(image.strip(), []).append(text)
    if not captions:
        raise DatasetError(f"{path}: no captions in the file")
    return captions


def parse_captions_csv(path: str) -> Dict[str, List[str]]:
    """Reads the Kaggle `captions.txt` (CSV with header `image,caption`) into image -> raw captions."""
    captions: Dict[str, List[str]] = {}
    with open(path, encoding=TEXT_ENCODING, newline="") as handle:
        try:
            rows = list(csv.reader(handle))
        except (csv.Error, UnicodeDecodeError) as error:
            raise DatasetError(f"{path}: not a readable CSV file ({error})") from None
    if not rows:
        raise DatasetError(f"{path}:1: empty file; expected the header 'image,caption'")
    if [cell.strip().lower() for cell in rows[0]] != ["image", "caption"]:
        raise DatasetError(f"{path}:1: expected the header 'image,caption', got {','.join(rows[0])[:60]!r}")
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip():
            raise DatasetError(f"{path}:{number}: expected 'image,caption' (2 columns), got {len(row)}")
        captions.setdefault(row[0].strip(), []).append(row[1])
    if not captions:
        raise DatasetError(f"{path}: a header but no captions")
    return captions


# Column names accepted in a caption table (--captions_file), compared lowercased.
IMAGE_COLUMNS = ("image", "image_name", "filename", "file")
CAPTION_COLUMNS = ("caption", "text", "comment")
SPLIT_NAMES = {"train": "train", "training": "train", "dev": "dev", "val": "dev", "valid": "dev",
               "validation": "dev", "test": "test", "testing": "test"}


def _pick_column(path: str, header: List[str], accepted: tuple, what: str) -> int:
    for index, name in enumerate(header):
        if name in accepted:
            return index
    raise DatasetError(f"{path}:1: no {what} column (expected one of {', '.join(accepted)}); "
                       f"the header names {', '.join(header)[:80]!r}")


def _table_rows(path: str) -> tuple[List[str], List[tuple]]:
    """The column names, and (line number, {column: value}) per row, of a CSV, TSV or pipe-separated
    file with a header, or of JSON Lines (columns: the first object's keys). Blank rows are left out."""
    lines = read_lines(path)
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise DatasetError(f"{path}:1: empty file; expected a header naming the image and caption columns, "
                           f"or JSON Lines with image and caption keys")
    rows = []
    if path.lower().endswith((".jsonl", ".ndjson")) or numbered[0][1].lstrip().startswith("{"):
        for number, line in numbered:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: not a JSON object ({error.msg})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object with image and caption keys")
            rows.append((number, {str(key).strip().lower(): value for key, value in record.items()}))
        return list(rows[0][1]), rows
    first = numbered[0][1]
    delimiter = "\t" if "\t" in first else "|" if "|" in first and "," not in first else ","
    parsed = list(csv.reader([line for _, line in numbered], delimiter=delimiter))
    header = [name.strip().lower() for name in parsed[0]]
    for (number, _), cells in zip(numbered[1:], parsed[1:]):
        if any(cell.strip() for cell in cells):
            rows.append((number, {name: (cells[i] if i < len(cells) else None) for i, name in enumerate(header)}))
    return header, rows


def parse_caption_table(path: str) -> tuple[Dict[str, List[str]], Optional[Dict[str, List[str]]]]:
    """Reads a table of image/caption pairs (--captions_file) into (image -> raw captions, splits or None).

    CSV, TSV or JSON Lines; the image column may be called image, image_name, filename or file, the
    caption column caption, text or comment; a `split` column (train, dev/val, test) gives the splits.
    """
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such captions file")
    columns, rows = _table_rows(path)
    image_column = columns[_pick_column(path, columns, IMAGE_COLUMNS, "image")]
    caption_column = columns[_pick_column(path, columns, CAPTION_COLUMNS, "caption")]
    has_split = "split" in columns
    captions: Dict[str, List[str]] = {}
    splits: Dict[str, List[str]] = {split: [] for split in SPLITS}
    if not rows:
        raise DatasetError(f"{path}: a header but no rows of image and caption")
    for number, record in rows:
        image, caption = record.get(image_column), record.get(caption_column)
        if not isinstance(image, str) or not image.strip():
            raise DatasetError(f"{path}:{number}: no image name (column or key {image_column!r})")
        if not isinstance(caption, str) or not caption.strip():
            raise DatasetError(f"{path}:{number}: no caption for {image.strip()} (column or key {caption_column!r})")
        image = image.strip()
        if image not in captions:
            captions[image] = []
            if has_split:
                split = SPLIT_NAMES.get(str(record.get("split") or "").strip().lower())
                if split is None:
                    raise DatasetError(f"{path}:{number}: split {record.get('split')!r} of {image}: expected train, "
                                       f"dev (or val) or test")
                splits[split].append(image)
        captions[image].append(caption)
    return captions, splits if has_split else None


def parse_karpathy_json(path: str) -> tuple[Dict[str, List[str]], Dict[str, List[str]], Dict[str, int]]:
    """Reads a Karpathy split file into (image name -> raw captions, split -> image names, skipped counts).

    An image's name is `filepath/filename` when the entry has a `filepath` (COCO: `val2014/...jpg`),
    else its `filename`; a sentence's text is its `raw` string, or its `tokens` joined by spaces.
    """
    content = read_json(path, hint="", error=DatasetError)
    images = content.get("images") if isinstance(content, dict) else None
    if not isinstance(images, list) or not images:
        raise DatasetError(f"{path}: expected a Karpathy split file, an object with a non-empty 'images' list")
    captions: Dict[str, List[str]] = {}
    splits: Dict[str, List[str]] = {split: [] for split in SPLITS}
    skipped: Dict[str, int] = {}
    for index, entry in enumerate(images):
        if not (isinstance(entry, dict) and isinstance(entry.get("filename"), str)
                and isinstance(entry.get("sentences"), list)):
            raise DatasetError(f"{path}: images[{index}]: expected 'filename' and a 'sentences' list")
        name = posixpath.join(entry["filepath"], entry["filename"]) if entry.get("filepath") else entry["filename"]
        split = KARPATHY_SPLITS.get(entry.get("split"))
        if split is None:
            reason = f"image with unknown split {entry.get('split')!r}"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        texts = []
        for sentence in entry["sentences"]:
            sentence = sentence if isinstance(sentence, dict) else {}
            tokens = sentence.get("tokens")
            if isinstance(sentence.get("raw"), str):
                texts.append(sentence["raw"])
            elif isinstance(tokens, list) and all(isinstance(token, str) for token in tokens):
                texts.append(" ".join(tokens))
            else:
                raise DatasetError(f"{path}: images[{index}] ({name}): a sentence with neither 'raw' text nor 'tokens'")
        captions[name] = texts
        splits[split].append(name)
    return captions, splits, skipped
