"""Which words of a caption vocabulary may name each ImageNet class: the map guided decoding works from.

The rule, in the code: inside the WordNet id ranges of ImageNet's natural categories (fish, birds,
snakes, dogs, cats, bears, monkeys, food, drinks, plants, landscapes...), a class may be named by the
last word of its label and by its category's words (tabby, Egyptian_cat -> cat; Labrador_retriever ->
retriever, dog, puppy). Man-made objects are not grouped by their WordNet ids (ImageNet sorts them
almost alphabetically), so a reviewed table names them, data/imagenet_class_words.tsv; it also
corrects the rule where a label misleads (the bird "kite" is a bird, not a kite; "drake" a duck).

Only words the vocabulary has count, each with its plural when the vocabulary has that too; every
alternative is one word. A class left with no word, a person ("ballplayer") or clothing does not guide.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from config import PROJECT_DIR
from inputs.imagenet import ImageNetClasses
from inputs.vocabulary import Vocabulary

CLASS_WORDS_TABLE = os.path.join(PROJECT_DIR, "data", "imagenet_class_words.tsv")
# (first WordNet id, last WordNet id, kind, category words), in ImageNet's order.
RANGES: Tuple[Tuple[str, str, str, Tuple[str, ...]], ...] = (
    ("n01440764", "n01498041", "animal", ("fish",)),  # tench .. stingray
    ("n01514668", "n01622779", "animal", ("bird",)),  # cock .. great grey owl
    ("n01629819", "n01644900", "animal", ()),  # salamanders, newts, frogs
    ("n01664065", "n01695060", "animal", ()),  # turtles, lizards
    ("n01697457", "n01698640", "animal", ("crocodile",)),  # crocodile, alligator
    ("n01728572", "n01756291", "animal", ("snake",)),  # thunder snake .. sidewinder
    ("n01768244", "n01784675", "animal", ("bug", "insect")),  # trilobite, scorpion, spiders, tick, centipede
    ("n01795545", "n01860187", "animal", ("bird",)),  # grouse .. black swan
    ("n01871265", "n01871265", "animal", ("elephant",)),  # tusker
    ("n01872401", "n01883070", "animal", ()),  # echidna .. wombat
    ("n01910747", "n01990800", "animal", ()),  # jellyfish .. isopod
    ("n02002556", "n02058221", "animal", ("bird",)),  # white stork .. albatross
    ("n02066245", "n02077923", "animal", ()),  # whales, dugong, sea lion
    ("n02085620", "n02113978", "animal", ("dog", "puppy")),  # Chihuahua .. Mexican hairless
    ("n02114367", "n02116738", "animal", ("dog",)),  # wolves, coyote, dingo, dhole, hunting dog
    ("n02117135", "n02120505", "animal", ()),  # hyena, foxes
    ("n02123045", "n02124075", "animal", ("cat",)),  # tabby .. Egyptian cat
    ("n02125311", "n02130308", "animal", ("cat",)),  # cougar .. cheetah
    ("n02132136", "n02134418", "animal", ("bear",)),  # brown bear .. sloth bear
    ("n02137549", "n02138441", "animal", ()),  # mongoose, meerkat
    ("n02165105", "n02268853", "animal", ("insect", "bug")),  # beetles .. damselfly
    ("n02276258", "n02281787", "animal", ("butterfly",)),  # admiral .. lycaenid
    ("n02317335", "n02321529", "animal", ()),  # starfish, sea urchin, sea cucumber
    ("n02325366", "n02328150", "animal", ("rabbit", "bunny")),  # wood rabbit, hare, Angora
    ("n02342885", "n02364673", "animal", ()),  # hamster .. guinea pig
    ("n02389026", "n02389026", "animal", ("horse", "pony")),  # sorrel
    ("n02391049", "n02398521", "animal", ()),  # zebra, hog, boar, warthog, hippopotamus
    ("n02403003", "n02410509", "animal", ("cow", "bull")),  # ox, water buffalo, bison
    ("n02412080", "n02415577", "animal", ("sheep",)),  # ram, bighorn
    ("n02417914", "n02417914", "animal", ("goat",)),  # ibex
    ("n02422106", "n02423022", "animal", ("deer",)),  # hartebeest, impala, gazelle
    ("n02437312", "n02437312", "animal", ("camel",)),  # Arabian camel
    ("n02437616", "n02457408", "animal", ()),  # llama, weasel .. three-toed sloth
    ("n02480495", "n02500267", "animal", ("monkey",)),  # orangutan .. indri
    ("n02504013", "n02504458", "animal", ("elephant",)),  # Indian, African elephant
    ("n02509815", "n02510455", "animal", ("bear",)),  # lesser, giant panda
    ("n02514041", "n02655020", "animal", ("fish",)),  # barracouta .. puffer
    ("n07579787", "n07579787", "food", ("plate", "food")),  # plate
    ("n07583066", "n07880968", "food", ("food", "meal")),  # guacamole .. burrito
    ("n07892512", "n07932039", "drink", ("drink",)),  # red wine, espresso, cup, eggnog
    ("n09193705", "n09472597", "scene", ()),  # alp .. volcano: by the table
    ("n09835506", "n10565667", "person", ()),  # ballplayer, groom, scuba diver: people, never
    ("n11879895", "n12057211", "plant", ("flower", "flowers")),  # rapeseed, daisy, lady's slipper
    ("n12144580", "n12144580", "plant", ("corn",)),  # corn
    ("n13133613", "n13133613", "plant", ("corn",)),  # ear (of corn)
)
# The kinds that guide captions by default; tuned on the Flickr8k dev split (docs/guided_decoding.md).
GUIDED_KINDS = ("animal", "food", "drink", "plant", "vehicle", "furniture", "household", "instrument",
                "structure", "scene")


@dataclass
class ClassWords:
    """For each of the 1000 classes: the vocabulary ids of the words that may name it (empty: it does not
    guide), and its kind."""
    word_ids: List[Tuple[int, ...]]
    kinds: List[str]

    def words(self, vocabulary: Vocabulary, class_index: int) -> List[str]:
        return [vocabulary.tokens[word] for word in self.word_ids[class_index]]

    @property
    def mapped(self) -> int:
        return sum(bool(words) for words in self.word_ids)


def read_table(path: str = CLASS_WORDS_TABLE) -> Dict[str, Tuple[str, Tuple[str, ...]]]:
    """The reviewed table: WordNet id -> (kind, words); no words ("-") means the class never guides."""
    table = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader((line for line in handle if not line.startswith("#")), delimiter="\t"):
            words = tuple(word for word in row["words"].split(",") if word and word != "-")
            table[row["wnid"]] = (row["kind"], words)
    return table


def category_of(wnid: str) -> Tuple[str, Tuple[str, ...]]:
    """(kind, category words) of the range the class falls in; ("", ()) outside every range."""
    for first, last, kind, words in RANGES:
        if first <= wnid <= last:
            return kind, words
    return "", ()


def label_head(label: str) -> str:
    """The label's last word, lowercased: Egyptian_cat -> cat, black-and-tan_coonhound -> coonhound."""
    return label.replace("-", "_").split("_")[-1].lower()


def with_plurals(words: Sequence[str], vocabulary: Vocabulary) -> Tuple[str, ...]:
    """The words the vocabulary has, each followed by its plural where the vocabulary has it."""
    found: List[str] = []
    for word in words:
        for form in (word, word + "s", word + "es"):
            if form in vocabulary.ids and form not in found:
                found.append(form)
    return tuple(found)


def class_words(classes: ImageNetClasses, vocabulary: Vocabulary, kinds: Sequence[str] = GUIDED_KINDS,
                table_path: str = CLASS_WORDS_TABLE) -> ClassWords:
    """The map for this vocabulary; classes of kinds outside `kinds` do not guide."""
    table = read_table(table_path)
    word_ids, class_kinds = [], []
    for wnid, label in zip(classes.wnids, classes.labels):
        if wnid in table:
            kind, candidates = table[wnid]
        else:
            kind, category = category_of(wnid)
            candidates = ((label_head(label),) + category) if kind else ()
        words = with_plurals(candidates, vocabulary) if kind in kinds else ()
        word_ids.append(tuple(vocabulary.ids[word] for word in words))
        class_kinds.append(kind)
    return ClassWords(word_ids, class_kinds)
