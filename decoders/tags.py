"""ImageNet tags of images, and the constraints they put on captions (guided decoding).

The encoder's own ImageNet classifier runs on the features the decoder reads (a pooled vector; the
mean of the regions for spatial features) and gives each image a probability for each of the 1000
classes. Classes that class_words.py maps to the same words form one group, whose probability is the
sum of theirs (tabby 0.4 + tiger cat 0.3 + Egyptian cat 0.2: "cat" 0.9). Up to two groups per image
whose probability passes the threshold, and whose words the unguided caption does not already use,
become constraints: the guided caption must contain one word of each (guided_search.py).

Everything here is TensorFlow operations, so an exported model computes the same tags and constraints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

from decoders.class_words import ClassWords
from inputs.imagenet import Classifier, ImageNetClasses

MAX_CONSTRAINTS = 2
SHOWN_TAGS = 3


@dataclass
class Guidance:
    """What guided one image's caption: the classifier's best classes, and the word groups the caption was
    asked to contain (each shown as its words joined by '|', with the group's probability)."""
    tags: List[Tuple[str, float]]
    constraints: List[Tuple[str, float]]
    guided: bool  # the caption is the guided one: it contains a word of at least one constraint
    caption: str = ""

    def as_dict(self) -> Dict[str, object]:
        return {"tags": [{"class": label, "probability": round(probability, 4)} for label, probability in self.tags],
                "constraints": [{"words": words, "probability": round(probability, 4)}
                                for words, probability in self.constraints],
                "guided": self.guided, "caption": self.caption}

    def describe(self) -> str:
        """One line: `tags: Egyptian cat 0.67, tabby 0.12, tiger cat 0.08; guided to say cat|cats (0.91)`."""
        line = "tags: " + ", ".join(f"{label} {probability:.2f}" for label, probability in self.tags)
        if self.guided:
            line += "; guided to say " + ", ".join(f"{words} ({probability:.2f})"
                                                   for words, probability in self.constraints)
        return line


class Tagger:
    """The classifier and the class -> word-group map of one run's vocabulary, as TensorFlow constants."""

    def __init__(self, classifier: Classifier, classes: ImageNetClasses, words: ClassWords, vocabulary_size: int,
                 threshold: float):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"--guide_threshold must be in (0, 1], got {threshold}")
        groups: Dict[Tuple[int, ...], int] = {}
        for word_ids in words.word_ids:
            if word_ids and word_ids not in groups:
                groups[word_ids] = len(groups)
        # The last group collects the classes that do not guide; its probability is never used.
        class_groups = np.zeros((len(words.word_ids), len(groups) + 1), np.float32)
        for index, word_ids in enumerate(words.word_ids):
            class_groups[index, groups[word_ids] if word_ids else len(groups)] = 1.0
        group_words = np.zeros((len(groups) + 1, vocabulary_size), bool)
        for word_ids, group in groups.items():
            group_words[group, list(word_ids)] = True
        self.labels, self.threshold = list(classes.labels), threshold
        self.group_word_ids = list(groups)  # group -> its words' vocabulary ids
        self.kernel, self.bias = tf.constant(classifier.kernel), tf.constant(classifier.bias)
        self.class_groups, self.group_words = tf.constant(class_groups), tf.constant(group_words)
        self.real_groups = tf.constant(np.arange(len(groups) + 1) < len(groups))

    def probabilities(self, image_features) -> tf.Tensor:
        """(images, 1000) class probabilities from the decoder's features: vectors, or maps of regions."""
        image_features = tf.convert_to_tensor(image_features, tf.float32)
        pooled = image_features if image_features.shape.rank == 2 else tf.reduce_mean(image_features, axis=1)
        return tf.nn.softmax(tf.matmul(pooled, self.kernel) + self.bias, axis=-1)

    def constraints(self, probabilities, token_ids, threshold: float = 0.0) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """For each image, from its class probabilities and its unguided caption's token ids: which words
        meet each of its MAX_CONSTRAINTS constraints ((images, 2, vocabulary) booleans; all False: none),
        the constraints' groups and their probabilities (0 where there is none). `threshold`: this call's,
        instead of the tagger's."""
        threshold = threshold or self.threshold
        group_probabilities = tf.matmul(probabilities, self.class_groups)
        named = tf.reduce_any(tf.gather(tf.transpose(self.group_words), token_ids), axis=1)  # (images, groups)
        eligible = (group_probabilities >= threshold) & ~named & self.real_groups
        values, groups = tf.math.top_k(tf.where(eligible, group_probabilities, -1.0), k=MAX_CONSTRAINTS)
        active = values >= threshold
        satisfies = tf.gather(self.group_words, groups) & active[:, :, None]
        return satisfies, groups, tf.where(active, values, 0.0)

    def top_tags(self, probabilities: np.ndarray, count: int = SHOWN_TAGS) -> List[List[Tuple[str, float]]]:
        """The `count` likeliest classes of each image, (label with spaces, probability), best first."""
        best = np.argsort(-probabilities, axis=1, kind="stable")[:, :count]
        return [[(self.labels[index].replace("_", " "), float(row[index])) for index in indices]
                for row, indices in zip(probabilities, best)]
