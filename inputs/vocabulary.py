"""Caption cleaning and the word vocabulary, shared by preprocessing, training and scoring.

The same `clean_caption` runs on training captions, on references and on generated captions, so
scores compare like with like. The vocabulary is plain JSON: no pickled Keras objects, which do
not survive Keras 3.
"""
from __future__ import annotations

import json
import re
import string
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from inputs.json_files import read_json

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
SPECIAL_TOKENS = (PAD, UNK, START, END)
PAD_ID, UNK_ID, START_ID, END_ID = range(4)

# Words a caption should not end on: articles, prepositions, conjunctions, possessives and
# auxiliaries ("a man in a", "a dog with its"). --block_bad_endings forbids <end> right after them.
BAD_ENDINGS = ("a", "an", "the", "of", "in", "on", "with", "at", "to", "and", "for", "from", "by", "into", "onto",
               "near", "under", "through", "its", "his", "her", "their", "is", "are", "while", "as")

# Cleaning deletes "<" and ">", so no cleaned word can ever equal a special token.
_PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")


def clean_caption(text: str) -> str:
    """Lowercases, drops punctuation and any token holding a digit, and collapses whitespace."""
    words = _PUNCTUATION.sub(" ", text.lower()).split()
    return " ".join(word for word in words if not any(ch.isdigit() for ch in word))


class Vocabulary:
    """Maps words to integer ids; ids 0-3 are the special tokens."""

    def __init__(self, words: Sequence[str]):
        self.tokens = list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]
        self.ids = {token: index for index, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int) -> "Vocabulary":
        counts = Counter(word for caption in captions for word in caption.split())
        # Most frequent first, ties alphabetical: the same captions always give the same ids.
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept)

    def encode(self, caption: str, length: int) -> np.ndarray:
        """`<start> words <end>` as ids, cut or padded with <pad> to `length` + 2 entries."""
        ids = [self.ids.get(word, UNK_ID) for word in caption.split()[:length]]
        row = np.full(length + 2, PAD_ID, dtype=np.int32)
        row[: len(ids) + 2] = [START_ID] + ids + [END_ID]
        return row

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first <end>, with the other special tokens left out."""
        words = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id == END_ID:
                break
            if token_id >= len(SPECIAL_TOKENS) or token_id == UNK_ID:
                words.append(self.tokens[token_id])
        return " ".join(words)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"tokens": self.tokens}, handle, indent=0)

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        tokens = read_json(path)["tokens"]
        if tuple(tokens[:4]) != SPECIAL_TOKENS:
            raise ValueError(f"{path}: not a vocabulary written by preprocess.py (special tokens missing)")
        return cls(tokens[4:])
