"""The policy of guided decoding, in one definition: which of an image's tags become constraints on its
caption, and what a guided caption must do to replace the plain one.

Selection, as the nocaps baselines do it (Agrawal et al. 2019, after Anderson et al. 2017):
- Word-level evidence: the probability that the image shows a word unit (cat|cats, canoe|kayak) is the
  sum of the probabilities of the classes it names: tabby 0.4 + tiger cat 0.3 + Egyptian cat 0.2 make
  "cat" 0.9, and canoe 0.5 counts for "canoe|kayak" and for "boat" alike.
- A unit guides when its evidence reaches the floor and the caption names neither it nor a more
  specific unit ("kayak" names the boat; "boat" does not name the kayak, so a caption that says only
  "boat" may still be guided to "kayak").
- The most specific first: a unit is dropped where a more specific one also guides (canoe 0.6 and
  speedboat 0.2: "canoe|kayak", not "boat").
- The `constraints` likeliest units guide (classes of kinds that never guide have no unit at all).
Replacement: the guided caption must meet all its constraints, or k-1 of k where there are several;
must keep every content word of the plain caption (a word of the map, or a person; a synonym or
plural keeps it, and any person word keeps a person) unless a more specific word replaces it ("dog"
may become "poodle"); and its mean log-probability per token must be
within `margin` of the plain caption's. Where the classifier is sure of a constraint (its evidence reaches
`sure`), the guided caption must name that constraint, need not keep the plain caption's content words
and gets twice the margin: a cat at 0.97 may replace the boy that Flickr8k's captioner saw in the photo.

Everything here is TensorFlow operations: predict.py, evaluate.py and the page run it eagerly, the
exported SavedModel in its graph.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, NamedTuple, Tuple

import numpy as np
import tensorflow as tf

from decoders.guided_search import MAX_CONSTRAINTS, Constraints
from tagging.class_words import ClassWords
from tagging.imagenet import Classifier, ImageNetClasses

SHOWN_TAGS = 3
SURE_MARGIN_FACTOR = 2.0  # the margin of a caption guided by a sure tag, in margins


@dataclass(frozen=True)
class PolicySettings:
    """--guide_threshold (the floor), --guide_constraints (k), --guide_margin, --guide_sure."""
    floor: float
    constraints: int
    margin: float
    sure: float

    def check(self) -> "PolicySettings":
        if not 0.0 < self.floor <= 1.0:
            raise ValueError(f"--guide_threshold must be in (0, 1], got {self.floor}")
        if not 1 <= self.constraints <= MAX_CONSTRAINTS:
            raise ValueError(f"--guide_constraints must be 1 to {MAX_CONSTRAINTS}, got {self.constraints}")
        if self.margin < 0:
            raise ValueError(f"--guide_margin must be 0 or more (a log-probability per word), got {self.margin}")
        if self.sure <= 0:
            raise ValueError(f"--guide_sure must be above 0 (a probability; above 1: never sure), got {self.sure}")
        return self

    @classmethod
    def of(cls, config) -> "PolicySettings":
        """The settings a script's configuration (config.Config) gives."""
        return cls(config.guide_threshold, config.guide_constraints, config.guide_margin, config.guide_sure).check()

    def with_floor(self, floor: float) -> "PolicySettings":
        """These settings with another floor (0: the same)."""
        return dataclasses.replace(self, floor=floor).check() if floor else self

    def describe(self) -> str:
        return f"floor {self.floor:g}, up to {self.constraints}, margin {self.margin:g}, sure {self.sure:g}"


class Selection(NamedTuple):
    """Each image's constraints: their units and evidence ((images, k); evidence 0 where there is none),
    the words that meet them, how many the guided caption must meet, the words it must keep (as
    TagPolicy.kept_words counts them; -1: none), and whether the classifier is sure of one (images,)."""
    units: tf.Tensor
    evidence: tf.Tensor
    constraints: Constraints
    required: tf.Tensor
    keep: tf.Tensor
    sure: tf.Tensor


class TagPolicy:
    """The classifier and the word units of one run's vocabulary, as TensorFlow constants."""

    def __init__(self, classifier: Classifier, classes: ImageNetClasses, words: ClassWords, vocabulary_size: int,
                 settings: PolicySettings):
        self.settings = settings.check()
        self.labels, self.units = list(classes.labels), list(words.units)
        self.unit_labels = [unit.label for unit in words.units]
        units = self.unit_count = max(len(words.units), 1)  # a vocabulary that names nothing keeps shapes valid
        class_units = np.zeros((len(words.class_units), units), np.float32)
        for index, chosen in enumerate(words.class_units):
            class_units[index, list(chosen)] = 1.0
        unit_words = np.zeros((units, vocabulary_size), bool)
        phrase_second = np.zeros((units, vocabulary_size), bool)
        phrase_first = np.full(units, -1, np.int32)
        for index, unit in enumerate(words.units):
            unit_words[index, list(unit.words)] = True
            phrase_second[index, list(unit.phrase_second)] = True
            phrase_first[index] = unit.phrase_first
        specific = words.more_specific() if words.units else np.zeros((1, 1), bool)
        self.kernel, self.bias = tf.constant(classifier.kernel), tf.constant(classifier.bias)
        self.class_units, self.unit_words = tf.constant(class_units), tf.constant(unit_words)
        self.phrase_first, self.phrase_second = tf.constant(phrase_first), tf.constant(phrase_second)
        self.specific = tf.constant(specific.astype(np.float32))
        self.kept_words = tf.constant(words.kept_words(vocabulary_size))

    def probabilities(self, image_features) -> tf.Tensor:
        """(images, 1000) class probabilities from the decoder's features: vectors, or maps of regions."""
        image_features = tf.convert_to_tensor(image_features, tf.float32)
        pooled = image_features if image_features.shape.rank == 2 else tf.reduce_mean(image_features, axis=1)
        return tf.nn.softmax(tf.matmul(pooled, self.kernel) + self.bias, axis=-1)

    def evidence(self, probabilities) -> tf.Tensor:
        """(images, units): each unit's probability, the sum over the classes it names."""
        return tf.matmul(probabilities, self.class_units)

    def named(self, token_ids) -> tf.Tensor:
        """(images, units) booleans: the caption names the unit, by its words or phrase or by a more
        specific unit's."""
        present = tf.reduce_any(tf.gather(tf.transpose(self.unit_words), token_ids), axis=1)  # (images, units)
        follows_first = tf.equal(token_ids[:, :-1, None], self.phrase_first[None, None, :])  # (images, pairs, units)
        second = tf.gather(tf.transpose(self.phrase_second), token_ids[:, 1:])  # (images, pairs, units)
        present |= tf.reduce_any(follows_first & second, axis=1)
        return present | (tf.matmul(tf.cast(present, tf.float32), self.specific) > 0)

    def select(self, probabilities, token_ids, settings: PolicySettings) -> Selection:
        """The constraints each image's plain caption `token_ids` gets, and what the guided one must keep."""
        evidence = self.evidence(probabilities)
        eligible = (evidence >= settings.floor) & ~self.named(token_ids)
        eligible &= ~(tf.matmul(tf.cast(eligible, tf.float32), self.specific) > 0)  # a more specific one guides
        values, units = tf.math.top_k(tf.where(eligible, evidence, -1.0), k=min(settings.constraints, self.unit_count))
        active = values >= settings.floor
        constraints = Constraints(tf.gather(self.unit_words, units) & active[..., None],
                                  tf.where(active, tf.gather(self.phrase_first, units), -1),
                                  tf.gather(self.phrase_second, units) & active[..., None])
        count = tf.reduce_sum(tf.cast(active, tf.int32), axis=1)
        required = tf.where(count > 1, count - 1, count)  # k-1 of k
        # The words of units more generic than a constraint may be replaced by it ("dog" by "poodle").
        generic = tf.reduce_sum(tf.gather(self.specific, units) * tf.cast(active, tf.float32)[..., None], axis=1)
        replaceable = tf.matmul(generic, tf.cast(self.unit_words, tf.float32)) > 0  # (images, vocabulary)
        kept = tf.gather(self.kept_words, token_ids)
        kept = tf.where(tf.gather(replaceable, token_ids, batch_dims=1), -1, kept)
        evidence = tf.where(active, values, 0.0)
        sure = tf.reduce_max(evidence, axis=1) >= settings.sure
        kept = tf.where(sure[:, None], -1, kept)  # a sure tag may replace what the plain caption said
        return Selection(units, evidence, constraints, required, kept, sure)

    @staticmethod
    def margins(sure, margin: float) -> tf.Tensor:
        """(images,) the margin of each image's guided caption: twice `margin` where a tag is sure."""
        return tf.where(sure, SURE_MARGIN_FACTOR * margin, margin)

    @staticmethod
    def accepts(found, guided_score, guided_length, plain_score, plain_length, margin: float) -> tf.Tensor:
        """Whether a guided caption replaces the plain one: it qualified, and its mean log-probability per
        token is within `margin` (one, or one per image) of the plain caption's."""
        per_token = lambda score, length: score / tf.maximum(tf.cast(length, tf.float32), 1.0)  # noqa: E731
        return found & (per_token(guided_score, guided_length) >= per_token(plain_score, plain_length) - margin)

    def top_tags(self, probabilities: np.ndarray, count: int = SHOWN_TAGS) -> List[List[Tuple[str, float]]]:
        """The `count` likeliest classes of each image, (label with spaces, probability), best first."""
        best = np.argsort(-probabilities, axis=1, kind="stable")[:, :count]
        return [[(self.labels[index].replace("_", " "), float(row[index])) for index in indices]
                for row, indices in zip(probabilities, best)]
