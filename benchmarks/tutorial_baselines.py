"""The usual approach of the caption-generator tutorials, written faithfully, for side-by-side comparison.

- extraction: one `load_img` + `model.predict` per image;
- training: every prefix of every caption a separate sample, one-hot targets (`to_categorical`);
- decoding: one `model.predict` per word per image (per beam, for beam search), re-reading the prefix.

Decoding follows the same rules as decoders/decoding.py (no <pad>/<start>/<unk>, no <end> first, cut at
max_length; optionally no <end> after the given word ids and no repeated n-gram), written as plainly
as possible, so its captions can be compared token for token.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import numpy as np

from inputs.vocabulary import END_ID, PAD_ID, START_ID, UNK_ID


def predict_with(model) -> Callable:
    """What the tutorials call per word: model.predict on one batch, verbose off."""
    return lambda inputs: model.predict(inputs, verbose=0)


def _next_word_log_probabilities(predict, image_features, prefix, step, no_repeat_ngram_size=0, banned_endings=()):
    probabilities = np.array(predict([image_features[None], np.array([prefix], np.int32)]))[0, -1]
    with np.errstate(divide="ignore"):
        log_probabilities = np.log(probabilities.astype(np.float64))
    log_probabilities[[PAD_ID, START_ID, UNK_ID]] = -np.inf
    if step == 0:
        log_probabilities[END_ID] = -np.inf
    # Renormalised over the words that may be written; the optional rules below only remove words.
    allowed = np.isfinite(log_probabilities)
    log_probabilities[allowed] -= np.log(np.exp(log_probabilities[allowed]).sum())
    if step > 0 and prefix[-1] in banned_endings:
        log_probabilities[END_ID] = -np.inf
    words, n = prefix[1:], no_repeat_ngram_size
    if n:
        for start in range(len(words) - n + 1):
            if words[start:start + n - 1] == words[len(words) - n + 1:]:
                log_probabilities[words[start + n - 1]] = -np.inf
    return log_probabilities


def greedy_per_word(predict, image_features: np.ndarray, max_length: int, no_repeat_ngram_size: int = 0,
                    banned_endings: Sequence[int] = ()) -> List[int]:
    tokens = [START_ID]
    for step in range(max_length + 1):
        tokens.append(int(np.argmax(_next_word_log_probabilities(predict, image_features, tokens, step,
                                                                 no_repeat_ngram_size, banned_endings))))
        if tokens[-1] == END_ID:
            break
    return tokens[1:]


def beam_per_word(predict, image_features: np.ndarray, max_length: int, beam_size: int, no_repeat_ngram_size: int = 0,
                  banned_endings: Sequence[int] = ()) -> List[Tuple[List[int], float]]:
    """Beams best first as (token ids, log-probability); one predict call per beam per word."""
    beams = [([START_ID], 0.0, False)]
    for step in range(max_length + 1):
        candidates = []
        for tokens, score, done in beams:
            if done:
                candidates.append((tokens, score, True))
                continue
            log_probabilities = _next_word_log_probabilities(predict, image_features, tokens, step,
                                                             no_repeat_ngram_size, banned_endings)
            for word in np.argsort(-log_probabilities)[:beam_size]:
                if np.isfinite(log_probabilities[word]):
                    candidates.append((tokens + [int(word)], score + log_probabilities[word], word == END_ID))
        beams = sorted(candidates, key=lambda beam: -beam[1])[:beam_size]
        if all(done for _, _, done in beams):
            break
    return [(tokens[1:], score) for tokens, score, _ in beams]


def prefix_expansion(features: np.ndarray, rows: np.ndarray, caption_tokens: np.ndarray, vocabulary_size: int):
    """The tutorials' training data: one sample per (caption, position), left-padded, one-hot float64 targets."""
    length = caption_tokens.shape[1] - 1
    images, prefixes, targets = [], [], []
    for row, tokens in zip(rows, caption_tokens):
        real = int((tokens != PAD_ID).sum())
        for position in range(1, real):
            prefix = np.zeros(length, np.int32)
            prefix[length - position:] = tokens[:position]
            images.append(features[row])
            prefixes.append(prefix)
            one_hot = np.zeros(vocabulary_size)  # float64, as np.zeros / to_categorical on numpy give
            one_hot[tokens[position]] = 1.0
            targets.append(one_hot)
    return np.array(images), np.array(prefixes), np.array(targets)


def build_prefix_model(units: int, embedding_dim: int, dropout: float, vocabulary_size: int, feature_dim: int,
                       length: int):
    """The tutorials' merge model: the same layers as model.py, but the LSTM returns its last output only."""
    import keras
    from keras import layers

    image_features = keras.Input(shape=(feature_dim,))
    prefix = keras.Input(shape=(length,), dtype="int32")
    image = layers.Dense(units, activation="relu")(layers.Dropout(dropout)(image_features))
    words = layers.Dropout(dropout)(layers.Embedding(vocabulary_size, embedding_dim, mask_zero=True)(prefix))
    words = layers.LSTM(units)(words)
    hidden = layers.Dense(units, activation="relu")(layers.Add()([words, image]))
    model = keras.Model([image_features, prefix], layers.Dense(vocabulary_size, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def extract_per_image(encoder_model, paths: List[str], size: int) -> np.ndarray:
    """The tutorials' extraction loop: load_img, img_to_array, predict, one image at a time."""
    from keras.utils import img_to_array, load_img

    rows = []
    for path in paths:
        pixels = img_to_array(load_img(path, target_size=(size, size)))
        rows.append(encoder_model.predict(pixels[None], verbose=0)[0])
    return np.array(rows)
