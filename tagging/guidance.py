"""Guided decoding for a loaded run (`--guide tags`): its tag policy (the encoder's ImageNet classifier
and the word units of its vocabulary), and captions that name what the tags say.

`guide_in_graph` is the one definition predict.py, evaluate.py and the page run eagerly (`guide`) and
the exported SavedModel runs in its graph: an image whose tags ask for words its plain caption misses
is searched again with constrained beam search (at least GUIDED_BEAM wide, so greedy decoding too gets a
search that can place the word well), and the guided caption replaces the plain one where the policy
accepts it (tagging/policy.py). Every other image keeps its plain caption exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from decoders.guided_search import GuidedSearch
from inputs.encoders import ENCODERS
from inputs.vocabulary import PAD_ID, Vocabulary
from tagging.class_words import class_words
from tagging.imagenet import (GuidanceUnavailable, class_index_path, classifier_weights_path, load_classifier,
                              read_class_index)
from tagging.policy import SHOWN_TAGS, PolicySettings, TagPolicy

GUIDED_BEAM = 5


@dataclass
class Guidance:
    """What guided one image's caption: the classifier's best classes, and the word units the caption was
    asked to name (each shown as its words joined by '|', with its evidence)."""
    tags: List[Tuple[str, float]]
    constraints: List[Tuple[str, float]]
    guided: bool  # the caption is the guided one
    caption: str = ""
    units: Tuple[int, ...] = ()  # the constraints' word units (TagPolicy.unit_labels), for measurements

    def as_dict(self) -> Dict[str, object]:
        return {"tags": [{"class": label, "probability": round(probability, 4)} for label, probability in self.tags],
                "constraints": [{"words": words, "probability": round(probability, 4)}
                                for words, probability in self.constraints],
                "guided": self.guided, "caption": self.caption}

    def describe(self) -> str:
        """One line: `tags: Egyptian cat 0.67, tabby 0.12, tiger cat 0.08; guided to say cat (0.91)`."""
        line = "tags: " + ", ".join(f"{label} {probability:.2f}" for label, probability in self.tags)
        if self.guided:
            line += "; guided to say " + ", ".join(f"{words} ({probability:.2f})"
                                                   for words, probability in self.constraints)
        return line


def open_policy(metadata: dict, weights: str, vocabulary: Vocabulary, settings: PolicySettings,
                classifier_weights: str, class_names: str) -> TagPolicy:
    """The run's tag policy; GuidanceUnavailable says why a run cannot be guided, ValueError what file is wrong."""
    settings.check()
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
    return TagPolicy(load_classifier(encoder, source, weights), classes, words, len(vocabulary), settings)


def guide_in_graph(policy: TagPolicy, search: GuidedSearch, features, token_ids, beam_size: int,
                   length_penalty: float, settings: Optional[PolicySettings] = None,
                   log_probabilities=None) -> Dict[str, tf.Tensor]:
    """Each image's caption (token ids, width max_length + 1) and its log-probability (the plain captions'
    `log_probabilities` where given, else 0, for the images not guided), guided where the policy says so;
    whether it was guided; its shown tags; its constraints' units and evidence."""
    settings = settings or policy.settings
    decoder = search.decoder
    plain_scores = tf.zeros(tf.shape(token_ids)[:1]) if log_probabilities is None else log_probabilities
    width = decoder.max_length + 1
    token_ids = tf.pad(token_ids[:, :width], [[0, 0], [0, width - tf.shape(token_ids[:, :width])[1]]])
    probabilities = policy.probabilities(features)
    selection = policy.select(probabilities, token_ids, settings)
    constrained = tf.where(tf.reduce_any(selection.constraints.present(), axis=1))[:, 0]

    def search_again():
        rows = lambda tensor: tf.gather(tensor, constrained)  # noqa: E731
        guided_ids, scores, lengths, _, found = search.best_in_graph(
            rows(features), type(selection.constraints)(*(rows(part) for part in selection.constraints)),
            max(beam_size, GUIDED_BEAM), rows(selection.required), rows(selection.keep), length_penalty)
        plain_rows, plain_lengths = decoder.score_in_graph(rows(features), rows(token_ids))
        accepted = policy.accepts(found, scores, lengths, plain_rows, plain_lengths, settings.margin)
        indices = tf.boolean_mask(constrained, accepted)[:, None]
        return (tf.tensor_scatter_nd_update(token_ids, indices, tf.boolean_mask(guided_ids, accepted)),
                tf.tensor_scatter_nd_update(plain_scores, indices, tf.boolean_mask(scores, accepted)),
                tf.scatter_nd(indices, tf.ones_like(indices[:, 0], tf.int32), tf.shape(plain_scores, tf.int64)) > 0)

    token_ids, scores, guided = tf.cond(tf.size(constrained) > 0, search_again,
                                        lambda: (token_ids, plain_scores, tf.zeros_like(plain_scores, tf.bool)))
    tag_probabilities, tag_classes = tf.math.top_k(probabilities, k=SHOWN_TAGS)
    return {"token_ids": token_ids, "log_probabilities": scores, "guided": guided, "tag_classes": tag_classes,
            "tag_probabilities": tag_probabilities, "constraint_units": selection.units,
            "constraint_probabilities": selection.evidence}


def padded(token_rows: Sequence[np.ndarray]) -> np.ndarray:
    width = max((len(row) for row in token_rows), default=1)
    tokens = np.full((len(token_rows), max(width, 1)), PAD_ID, np.int32)
    for index, row in enumerate(token_rows):
        tokens[index, :len(row)] = row
    return tokens


def guide(policy: TagPolicy, search: GuidedSearch, image_features, plain: List[np.ndarray], beam_size: int,
          length_penalty: float, batch_size: int = 32,
          settings: Optional[PolicySettings] = None) -> Tuple[List[np.ndarray], List[Guidance]]:
    """Each image's caption token ids, guided where the policy says so, and what guided it (`settings`:
    this call's instead of the policy's)."""
    results, guidance = [], []
    for start in range(0, len(plain), batch_size):
        chunk = slice(start, start + batch_size)
        out = {key: value.numpy() for key, value in guide_in_graph(
            policy, search, tf.constant(np.asarray(image_features[chunk], np.float32)),
            tf.constant(padded(plain[chunk])), beam_size, length_penalty, settings).items()}
        for row, was_guided in enumerate(out["guided"]):
            results.append(out["token_ids"][row] if was_guided else np.asarray(plain[start + row], np.int32))
            tags = [(policy.labels[index].replace("_", " "), float(value))
                    for index, value in zip(out["tag_classes"][row], out["tag_probabilities"][row])]
            units = [int(unit) for unit, value in zip(out["constraint_units"][row], out["constraint_probabilities"][row])
                     if value > 0]
            asked = [(policy.unit_labels[unit], float(value)) for unit, value in
                     zip(out["constraint_units"][row], out["constraint_probabilities"][row]) if value > 0]
            guidance.append(Guidance(tags, asked, bool(was_guided), units=tuple(units)))
    return results, guidance
