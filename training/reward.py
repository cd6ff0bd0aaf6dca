"""CIDEr-D of many sampled captions at once: the reward of self-critical training (scst.py).

The formula is pycocoevalcap's CIDEr-D (n-grams 1-4, tf-idf vectors, clipped matches, Gaussian
length penalty with sigma 6, x10), which `metrics.coco_scores` reports. Two things differ by design:
- document frequencies are computed once, from all the references given at construction (the
  training captions), as the reference SCST implementations do, not from the images being scored;
- `<end>` counts as a word (Rennie et al. 2017, appendix D): a sample cut off mid-phrase lacks the
  n-grams "... <end>" that every reference has, so it is not rewarded for stopping anywhere.

pycocoevalcap loops over Python dictionaries per caption. Here every caption of a batch is handled
in a few numpy operations: n-grams become integer keys, the references' tf-idf entries sit in one
sorted array, and matches are found with `searchsorted`. tests/test_reward.py checks the numbers
against pycocoevalcap.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from inputs.vocabulary import END_ID, PAD_ID

MAX_ORDER = 4


def _ngram_keys(tokens: np.ndarray, lengths: np.ndarray, base: int):
    """(row, key, order) of every n-gram (orders 1-4) of each row's first `lengths[row]` ids.

    Ids are at least 1, so the key of an n-gram, its ids read as digits in `base`, lies in
    [base ** (n - 1), base ** n): keys of different orders never collide.
    """
    rows, keys, orders = [], [], []
    width = tokens.shape[1]
    for order in range(1, MAX_ORDER + 1):
        if width < order:
            break
        starts = width - order + 1
        key = np.zeros((len(tokens), starts), np.int64)
        for offset in range(order):
            key = key * base + tokens[:, offset:offset + starts]
        valid = np.arange(starts)[None, :] + order <= lengths[:, None]
        row_index, _ = np.nonzero(valid)
        rows.append(row_index)
        keys.append(key[valid])
        orders.append(np.full(len(row_index), order - 1, np.int64))
    return np.concatenate(rows), np.concatenate(keys), np.concatenate(orders)


def _count(rows: np.ndarray, keys: np.ndarray, orders: np.ndarray):
    """Unique (row, key) pairs with their order and how often each occurs."""
    order = np.lexsort((keys, rows))
    rows, keys, orders = rows[order], keys[order], orders[order]
    new = np.ones(len(rows), bool)
    new[1:] = (rows[1:] != rows[:-1]) | (keys[1:] != keys[:-1])
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(rows)))
    return rows[starts], keys[starts], orders[starts], counts.astype(np.float64)


class CiderD:
    """CIDEr-D of token-id captions against the references of their image.

    `references[i]` are the (cleaned) captions of image i; `vocabulary_tokens` fixes the ids of the
    words a model can write (a run's `Vocabulary.tokens`). Reference words outside the vocabulary
    get ids of their own, so they are told apart as pycocoevalcap tells them apart.
    """

    def __init__(self, references: Sequence[Sequence[str]], vocabulary_tokens: Sequence[str],
                 count_end: bool = True, sigma: float = 6.0):
        if not references or any(not captions for captions in references):
            raise ValueError("CIDEr-D needs at least one reference caption for every image")
        self.count_end, self.sigma = count_end, sigma
        self.word_ids: Dict[str, int] = {token: index for index, token in enumerate(vocabulary_tokens)}
        captions = [caption for image_captions in references for caption in image_captions]
        for caption in captions:
            for word in caption.split():
                self.word_ids.setdefault(word, len(self.word_ids))
        # Room for words that appear only in scored captions (score_texts), each an id of its own.
        self.base = 2 * len(self.word_ids) + 2
        if float(self.base) ** MAX_ORDER >= 2.0 ** 62:
            raise ValueError(f"{len(self.word_ids)} distinct words is too many for 64-bit n-gram keys")
        tokens, lengths = self._encode(captions)
        caption_rows, keys, orders, counts = _count(*_ngram_keys(tokens, lengths, self.base))
        self.reference_start = np.cumsum([0] + [len(image_captions) for image_captions in references])
        image_of_caption = np.repeat(np.arange(len(references)), np.diff(self.reference_start))
        # Document frequency: in how many images' references an n-gram occurs.
        image_keys = np.unique(np.stack([image_of_caption[caption_rows], keys], axis=1), axis=0)[:, 1]
        self.known_keys, document_frequency = np.unique(image_keys, return_counts=True)
        if not len(self.known_keys):
            raise ValueError("the reference captions hold no words")
        self.log_images = np.log(float(len(references)))
        self.idf = self.log_images - np.log(np.maximum(document_frequency, 1.0))
        known = np.searchsorted(self.known_keys, keys)
        values = counts * self.idf[known]
        # One sorted array of every reference entry, keyed by (reference caption, n-gram).
        self.entry_keys = caption_rows * len(self.known_keys) + known
        self.entry_values = values
        self.reference_norms = self._norms(caption_rows, orders, values, len(captions))
        self.reference_lengths = np.maximum(lengths - 1, 0).astype(np.float64)

    def _encode(self, captions: Sequence[str]):
        extra: Dict[str, int] = {}
        rows = []
        for caption in captions:
            ids = [self.word_ids[word] if word in self.word_ids
                   else extra.setdefault(word, len(self.word_ids) + len(extra)) for word in caption.split()]
            rows.append(ids + [END_ID] if self.count_end else ids)
        if len(self.word_ids) + len(extra) >= self.base:
            raise ValueError("too many words outside the references to score in one call")
        lengths = np.array([len(ids) for ids in rows], np.int64)
        tokens = np.full((len(rows), max(1, int(lengths.max(initial=0)))), PAD_ID, np.int64)
        for row, ids in enumerate(rows):
            tokens[row, :len(ids)] = ids
        return tokens, lengths

    @staticmethod
    def _norms(rows, orders, values, count):
        squares = np.bincount(rows * MAX_ORDER + orders, weights=values ** 2, minlength=count * MAX_ORDER)
        return np.sqrt(squares).reshape(count, MAX_ORDER)

    def score_tokens(self, token_ids: np.ndarray, images: np.ndarray) -> np.ndarray:
        """CIDEr-D of each row of `token_ids` (words, then <end> unless cut, then <pad>) against the
        references of image `images[row]`."""
        token_ids = np.asarray(token_ids, np.int64)
        if token_ids.ndim != 2 or len(token_ids) != len(images):
            raise ValueError("need one row of token ids per image index")
        is_word = (token_ids != PAD_ID) & (token_ids != END_ID)
        words = np.where(np.cumsum(~is_word, axis=1) == 0, is_word, False).sum(axis=1)
        ended = np.take_along_axis(token_ids, np.minimum(words, token_ids.shape[1] - 1)[:, None], 1)[:, 0] == END_ID
        lengths = words + (ended & (words < token_ids.shape[1]) & self.count_end)
        return self._score(token_ids, lengths, np.asarray(images, np.int64))

    def score_texts(self, captions: Sequence[str], images: Sequence[int]) -> np.ndarray:
        """CIDEr-D of caption strings (cleaned like the references) against the references of `images`."""
        tokens, lengths = self._encode(captions)
        return self._score(tokens, lengths, np.asarray(images, np.int64))

    def _score(self, tokens: np.ndarray, lengths: np.ndarray, images: np.ndarray) -> np.ndarray:
        count = len(tokens)
        rows, keys, orders, counts = _count(*_ngram_keys(tokens, lengths, self.base))
        position = np.minimum(np.searchsorted(self.known_keys, keys), len(self.known_keys) - 1)
        known = self.known_keys[position] == keys
        # An n-gram no reference has gets the largest idf (document frequency counted as 1).
        values = counts * np.where(known, self.idf[position], self.log_images)
        norms = self._norms(rows, orders, values, count)
        caption_lengths = np.maximum(lengths - 1, 0).astype(np.float64)

        # Every (caption, reference of its image) pair, numbered.
        first = self.reference_start[images]
        per_caption = self.reference_start[images + 1] - first
        pair_start = np.concatenate([[0], np.cumsum(per_caption)])
        pair_caption = np.repeat(np.arange(count), per_caption)
        pair_reference = first[pair_caption] + np.arange(pair_start[-1]) - pair_start[pair_caption]

        # Each known n-gram of a caption, looked up in each reference of its image.
        rows, position, orders, values = rows[known], position[known], orders[known], values[known]
        repeats = per_caption[rows]
        entry = np.repeat(np.arange(len(rows)), repeats)
        entry_pair = pair_start[rows][entry] + np.arange(len(entry)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
        query = pair_reference[entry_pair] * len(self.known_keys) + position[entry]
        found = np.minimum(np.searchsorted(self.entry_keys, query), len(self.entry_keys) - 1)
        reference_values = np.where(self.entry_keys[found] == query, self.entry_values[found], 0.0)
        overlap = np.minimum(values[entry], reference_values) * reference_values
        similarity = np.bincount(entry_pair * MAX_ORDER + orders[entry], weights=overlap,
                                 minlength=len(pair_caption) * MAX_ORDER).reshape(-1, MAX_ORDER)
        denominator = norms[pair_caption] * self.reference_norms[pair_reference]
        similarity = np.divide(similarity, denominator, out=np.zeros_like(similarity), where=denominator != 0)
        delta = caption_lengths[pair_caption] - self.reference_lengths[pair_reference]
        pair_scores = similarity.mean(axis=1) * np.exp(-delta ** 2 / (2 * self.sigma ** 2))
        return 10.0 * np.bincount(pair_caption, weights=pair_scores, minlength=count) / per_caption

