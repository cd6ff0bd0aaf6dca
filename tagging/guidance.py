"""Guided decoding for a loaded run (`--guide tags`): its tag policy (the encoder's ImageNet classifier
and the word units of its vocabulary), and captions that name what the tags say.

`guide` (predict.py, evaluate.py and the page) and `guide_in_graph` (the exported SavedModel) run the same
two steps, the policy's selection and `search_and_accept`: an image whose tags ask for words its plain caption misses
is searched again with constrained beam search (at least GUIDED_BEAM wide, so greedy decoding too gets a
search that can place the word well), and the guided caption replaces the plain one where the policy
accepts it (tagging/policy.py). Every other image keeps its plain caption exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from decoders.guided_search import Constraints, GuidedSearch
from inputs.encoders import ENCODERS
from inputs.vocabulary import PAD_ID, Vocabulary
from tagging.class_words import class_words
from tagging.imagenet import (GuidanceUnavailable, class_index_path, classifier_weights_path, load_classifier,
                              read_class_index)
from tagging.policy import SHOWN_TAGS, PolicySettings, Selection, TagPolicy

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
    sure: bool = False  # the policy was sure of a constraint (Selection.sure), for measurements

    def as_dict(self) -> Dict[str, object]:
        return {"tags": [{"class": label, "probability": round(probability, 4)} for label, probability in self.tags],
                "constraints": [{"words": words, "probability": round(probability, 4)}
                                for words, probability in self.constraints],
                "guided": self.guided, "caption": self.caption}

    def describe(self) -> str:
        """One line: `tags: Egyptian cat 0.81, tiger cat 0.08, tabby 0.07; guided to say cat (0.97)`."""
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


def search_and_accept(policy: TagPolicy, search: GuidedSearch, features, token_ids, selection: Selection,
                      beam_size: int, length_penalty: float, margin: float):
    """For images that have constraints: their guided captions (token ids), log-probabilities, and whether
    each replaces the plain caption `token_ids` (the policy's rules)."""
    guided_ids, scores, lengths, _, found = search.best_in_graph(
        features, selection.constraints, max(beam_size, GUIDED_BEAM), selection.required, selection.keep,
        length_penalty, policy.kept_words, must=tf.where(selection.sure, 1, 0))  # a sure tag's word is a must
    plain_scores, plain_lengths = search.decoder.score_in_graph(features, token_ids)
    return guided_ids, scores, policy.accepts(found, scores, lengths, plain_scores, plain_lengths,
                                              policy.margins(selection.sure, margin))


def rows_of(selection: Selection, rows) -> Selection:
    """The selection of some images only."""
    take = lambda tensor: tf.gather(tensor, rows)  # noqa: E731
    return Selection(take(selection.units), take(selection.evidence), Constraints(*map(take, selection.constraints)),
                     take(selection.required), take(selection.keep), take(selection.sure))


def full_width(token_ids, decoder) -> tf.Tensor:
    """Token ids cut or padded to the searches' width, max_length + 1."""
    width = decoder.max_length + 1
    token_ids = tf.convert_to_tensor(token_ids, tf.int32)[:, :width]
    return tf.pad(token_ids, [[0, 0], [0, width - tf.shape(token_ids)[1]]])


def guide_in_graph(policy: TagPolicy, search: GuidedSearch, features, token_ids, log_probabilities, beam_size: int,
                   length_penalty: float) -> Dict[str, tf.Tensor]:
    """What `guide` does, for the exported SavedModel's graph: each image's caption (token ids, width
    max_length + 1) and log-probability, guided where the policy says so; whether it was guided; its tags."""
    token_ids = full_width(token_ids, search.decoder)
    probabilities = policy.probabilities(features)
    selection = policy.select(probabilities, token_ids, policy.settings)
    constrained = tf.where(tf.reduce_any(selection.constraints.present(), axis=1))[:, 0]

    def search_again():
        rows = lambda tensor: tf.gather(tensor, constrained)  # noqa: E731
        guided_ids, scores, accepted = search_and_accept(policy, search, rows(features), rows(token_ids),
                                                         rows_of(selection, constrained), beam_size, length_penalty,
                                                         policy.settings.margin)
        indices = tf.boolean_mask(constrained, accepted)[:, None]
        return (tf.tensor_scatter_nd_update(token_ids, indices, tf.boolean_mask(guided_ids, accepted)),
                tf.tensor_scatter_nd_update(log_probabilities, indices, tf.boolean_mask(scores, accepted)),
                tf.scatter_nd(indices, tf.ones_like(indices[:, 0], tf.int32), tf.shape(log_probabilities, tf.int64)) > 0)

    token_ids, scores, guided = tf.cond(tf.size(constrained) > 0, search_again,
                                        lambda: (token_ids, log_probabilities, tf.zeros_like(log_probabilities, tf.bool)))
    tag_probabilities, tag_classes = tf.math.top_k(probabilities, k=SHOWN_TAGS)
    return {"token_ids": token_ids, "log_probabilities": scores, "guided": guided, "tag_classes": tag_classes,
            "tag_probabilities": tag_probabilities}


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
    this call's instead of the policy's). The policy selects for all images at once, then the images with
    constraints are searched together, `batch_size` at a time (the search's cost is mostly per call)."""
    settings = settings or policy.settings
    features = tf.constant(np.asarray(image_features, np.float32))
    tokens = full_width(padded(plain), search.decoder)
    probabilities = policy.probabilities(features)
    selection = policy.select(probabilities, tokens, settings)
    constrained = np.flatnonzero(selection.constraints.present().numpy().any(axis=1))
    results, guided = [np.asarray(row, np.int32) for row in plain], np.zeros(len(plain), bool)
    counts = selection.constraints.present().numpy().sum(axis=1)
    constrained = constrained[np.argsort(counts[constrained], kind="stable")]  # batches of like counts
    for start in range(0, len(constrained), batch_size):
        rows = constrained[start:start + batch_size]
        # Only as many constraints as the batch's images have: the search keeps a beam for each subset of
        # them, and the constraints left out are absent everywhere (their states are dead): the same
        # captions as the graph's search with all k, at a fraction of the cost.
        used = int(counts[rows].max())
        chosen = rows_of(selection, rows)
        chosen = chosen._replace(constraints=Constraints(*(part[:, :used] for part in chosen.constraints)))
        guided_ids, _, accepted = search_and_accept(policy, search, tf.gather(features, rows), tf.gather(tokens, rows),
                                                    chosen, beam_size, length_penalty, settings.margin)
        for row, ids, keep in zip(rows, guided_ids.numpy(), accepted.numpy()):
            results[row], guided[row] = (ids, True) if keep else (results[row], False)
    tags = policy.top_tags(probabilities.numpy())
    units, evidence, sure = selection.units.numpy(), selection.evidence.numpy(), selection.sure.numpy()
    guidance = [Guidance(tags[row], [(policy.unit_labels[unit], float(value))
                                     for unit, value in zip(units[row], evidence[row]) if value > 0], bool(guided[row]),
                         units=tuple(int(unit) for unit, value in zip(units[row], evidence[row]) if value > 0),
                         sure=bool(sure[row]))
                for row in range(len(plain))]
    return results, guidance
