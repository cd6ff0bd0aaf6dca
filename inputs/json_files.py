"""Reading and writing the project's JSON files, with one-line errors and no half-written files.

Every JSON file the pipeline reads goes through `read_json`: a run folder's metadata, vocabulary,
captions and training states, a package's metadata, a Karpathy split file, a captions file to score.
A damaged file gives one error that names it, so the script's one error line says which file to
restore, not only where the parser stopped.
"""
from __future__ import annotations

import json
import os
from typing import Any, Type

RUN_FILE_HINT = "restore the file, or run the script that writes it again"


def read_json(path: str, hint: str = RUN_FILE_HINT, error: Type[ValueError] = ValueError) -> Any:
    """The content of a JSON file; `error` (a ValueError) naming the file when it is not UTF-8 JSON.

    "utf-8-sig" also reads files saved with a byte-order mark (Windows editors write one); files
    without it read the same.
    """
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as problem:
        raise error(f"{path}: not valid JSON ({problem.msg}, line {problem.lineno})"
                    + (f"; {hint}" if hint else "")) from None
    except UnicodeDecodeError as problem:
        raise error(f"{path}: not UTF-8 text ({problem.reason} at byte {problem.start})") from None


def write_json(path: str, value: Any, indent: int = 1) -> None:
    """Writes through a temporary file, so an interrupted write never leaves a half file."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=indent)
    os.replace(temporary, path)
