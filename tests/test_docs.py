"""The documents state what the code does: the flag table's defaults are config.py's."""
from __future__ import annotations

import dataclasses
import os
import re
from typing import List

from conftest import PROJECT


def documented_defaults() -> List[tuple]:
    """(flag, documented default) for each flag of docs/scripts.md's table whose default cell gives one
    plain value per flag."""
    with open(os.path.join(PROJECT, "docs", "scripts.md"), encoding="utf-8") as handle:
        rows = [line for line in handle if line.startswith("| `--")]
    pairs = []
    for row in rows:
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        flags = re.findall(r"`--(\w+)", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1]) if cells[1] != "off" else ["off"] * len(flags)
        if len(defaults) == len(flags) and cells[1].replace("`", "").replace(", ", "") == "".join(defaults):
            pairs.extend(zip(flags, defaults))
    return pairs


def test_the_flag_table_gives_the_defaults_config_py_has():
    from config import Config

    defaults, checked = dataclasses.asdict(Config()), 0
    for flag, documented in documented_defaults():
        if flag not in defaults:
            continue
        value = defaults[flag]
        shown = "off" if value is False else str(value)
        if isinstance(value, str) and os.path.isabs(value):  # a folder of the project, shown relative to it
            shown = os.path.relpath(value, PROJECT)
        assert documented == shown, f"docs/scripts.md gives --{flag} the default {documented}; config.py has {shown}"
        checked += 1
    assert checked >= 40, f"only {checked} documented defaults could be read from docs/scripts.md's table"
