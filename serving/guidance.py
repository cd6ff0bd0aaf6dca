"""Guided decoding for a loaded run: its tagger (the encoder's ImageNet classifier and the class -> word map
of its vocabulary), and captions that must name what the tags say (`--guide tags`).

An image is guided only where its unguided caption misses a confident tag's words: the caption is
searched again with constrained beam search (at least GUIDED_BEAM wide, so greedy decoding too gets a
search that can place the word well), and kept when it meets a constraint. Every other image keeps its
unguided caption exactly.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from decoders.class_words import class_words
from decoders.guided_search import GuidedSearch
from decoders.tags import Guidance, Tagger
from inputs.encoders import ENCODERS
from inputs.imagenet import (GuidanceUnavailable, class_index_path, classifier_weights_path, load_classifier,
                             read_class_index)
from inputs.vocabulary import PAD_ID, Vocabulary

GUIDED_BEAM = 5


def open_tagger(metadata: dict, weights: str, vocabulary: Vocabulary, threshold: float, classifier_weights: str,
                class_names: str) -> Tagger:
    """The run's tagger; GuidanceUnavailable says why a run cannot be guided, ValueError what file is wrong."""
    encoder = metadata["encoder"]
    if metadata.get("fine_tuned_encoder"):
        raise GuidanceUnavailable("its encoder is fine-tuned, and the ImageNet classifier reads the frozen "
                                  "encoder's features")
    if metadata.get("features") == "spatial" and ENCODERS[encoder].spatial_layer is not None:
        raise GuidanceUnavailable(f"{encoder}'s spatial features are not the features its ImageNet classifier reads")
    source = classifier_weights_path(encoder, classifier_weights, weights)
    classes = read_class_index(class_index_path(class_names))
    words = class_words(classes, vocabulary)
    if not words.mapped:
        raise GuidanceUnavailable("its vocabulary has no word for any ImageNet class")
    return Tagger(load_classifier(encoder, source, weights), classes, words, len(vocabulary), threshold)


def padded(token_rows: Sequence[np.ndarray]) -> np.ndarray:
    width = max((len(row) for row in token_rows), default=1)
    tokens = np.full((len(token_rows), max(width, 1)), PAD_ID, np.int32)
    for index, row in enumerate(token_rows):
        tokens[index, :len(row)] = row
    return tokens


def guide(tagger: Tagger, search: GuidedSearch, vocabulary: Vocabulary, image_features, unguided: List[np.ndarray],
          beam_size: int, length_penalty: float, batch_size: int = 32,
          threshold: float = 0.0) -> Tuple[List[np.ndarray], List[Guidance]]:
    """Each image's caption token ids, guided where its tags ask for it, and what guided it (`threshold`:
    this call's, instead of the tagger's)."""
    probabilities = np.concatenate([tagger.probabilities(np.asarray(image_features[start:start + 256], np.float32))
                                    .numpy() for start in range(0, len(unguided), 256)])
    satisfies, groups, values = (tensor.numpy() for tensor in tagger.constraints(probabilities, padded(unguided),
                                                                                        threshold))
    constrained = np.flatnonzero(satisfies.any(axis=(1, 2)))
    results, guided = list(unguided), set()
    if len(constrained):
        found = search.best(np.asarray(image_features[constrained], np.float32), satisfies[constrained],
                            max(beam_size, GUIDED_BEAM), length_penalty, batch_size)
        for row, (token_ids, _, met) in zip(constrained, found):
            if met:
                results[row], guided = np.asarray(token_ids, np.int32), guided | {int(row)}
    tags = tagger.top_tags(probabilities)
    guidance = [Guidance(tags[row], [("|".join(vocabulary.tokens[word] for word in tagger.group_word_ids[group]),
                                      float(value)) for group, value in zip(groups[row], values[row]) if value > 0],
                         row in guided)
                for row in range(len(unguided))]
    return results, guidance
