"""The documents state what the code does: the flag table's defaults are config.py's, and the numbers the docs give
that the code computes (metrics, guided search width) are the code's (the guiding classes: test_class_words.py)."""
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


NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                "ten": 10}


def read_doc(*parts: str) -> str:
    with open(os.path.join(PROJECT, *parts), encoding="utf-8") as handle:
        return handle.read()


def test_every_count_of_metrics_the_docs_give_is_the_number_evaluate_prints():
    from scoring.metrics import COCO_METRICS

    documents = ["README.md", "BENCHMARKS.md"] + [os.path.join("docs", name) for name in
                                                    sorted(os.listdir(os.path.join(PROJECT, "docs")))
                                                    if name.endswith(".md")]
    counts = [(document, word) for document in documents for word in re.findall(
        r"\b(" + "|".join(NUMBER_WORDS) + r") (?:COCO |caption )?metrics\b", read_doc(document), re.IGNORECASE)]
    assert any(document == "README.md" for document, _ in counts)  # the pattern still finds the README's
    for document, word in counts:
        assert NUMBER_WORDS[word.lower()] == len(COCO_METRICS), f"{document} says {word} metrics"


def test_the_guided_search_width_the_docs_give_is_the_codes():
    from tagging.guidance import GUIDED_BEAM

    widths = re.findall(r"at least (\d+) beams", read_doc("docs", "guided_decoding.md"))
    assert widths and {int(width) for width in widths} == {GUIDED_BEAM}
