"""Which words of a caption vocabulary may name each ImageNet class, most specific first.

A class's names come in tiers: its own word first, then its category's (canoe: "canoe" or "kayak",
then "boat"; golden_retriever: "retriever", then "dog" or "puppy"). The rule, in the code: inside the
WordNet id ranges of ImageNet's natural categories (fish, birds, snakes, dogs, cats, bears, monkeys,
food, drinks, plants...), a class is named by the last word of its label, then by its category's words.
Man-made objects are not grouped by their WordNet ids (ImageNet sorts them almost alphabetically), so
a reviewed table names them, tagging/class_words.tsv; it also corrects the rule where a label's last
word is wrong for the class (Boston_bull is a terrier; African_grey a parrot; ice_cream is not cream).

For one vocabulary, the names it has (each with its plural from `inflect`, where the vocabulary has
that too; a two-word name where it has both words) are merged into word units: the names of one tier
are synonyms, so they form one unit (couch, couches, sofa, sofas), shared by every class that has it.
A unit is more specific than another where a class names it first (kayak before boat).
"""
from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from tagging.imagenet import ImageNetClasses
from inputs.vocabulary import Vocabulary

CLASS_WORDS_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "class_words.tsv")
# (first WordNet id, last WordNet id, kind, category names in the table's notation), in ImageNet's order.
RANGES: Tuple[Tuple[str, str, str, str], ...] = (
    ("n01440764", "n01498041", "animal", "fish"),  # tench .. stingray
    ("n01514668", "n01622779", "animal", "bird"),  # cock .. great grey owl
    ("n01629819", "n01644900", "animal", ""),  # salamanders, newts, frogs
    ("n01664065", "n01695060", "animal", ""),  # turtles, lizards
    ("n01697457", "n01698640", "animal", "crocodile"),  # crocodile, alligator
    ("n01728572", "n01756291", "animal", "snake"),  # thunder snake .. sidewinder
    ("n01768244", "n01784675", "animal", "bug,insect"),  # trilobite, scorpion, spiders, tick, centipede
    ("n01795545", "n01860187", "animal", "bird"),  # grouse .. black swan
    ("n01871265", "n01871265", "animal", "elephant"),  # tusker
    ("n01872401", "n01883070", "animal", ""),  # echidna .. wombat
    ("n01910747", "n01990800", "animal", ""),  # jellyfish .. isopod
    ("n02002556", "n02058221", "animal", "bird"),  # white stork .. albatross
    ("n02066245", "n02077923", "animal", ""),  # whales, dugong, sea lion
    ("n02085620", "n02113978", "animal", "dog,puppy"),  # Chihuahua .. Mexican hairless
    ("n02114367", "n02116738", "animal", "dog"),  # wolves, coyote, dingo, dhole, hunting dog
    ("n02117135", "n02120505", "animal", ""),  # hyena, foxes
    ("n02123045", "n02124075", "animal", "cat,kitten"),  # tabby .. Egyptian cat
    ("n02125311", "n02130308", "animal", "cat"),  # cougar .. cheetah
    ("n02132136", "n02134418", "animal", "bear"),  # brown bear .. sloth bear
    ("n02137549", "n02138441", "animal", ""),  # mongoose, meerkat
    ("n02165105", "n02268853", "animal", "insect,bug"),  # beetles .. damselfly
    ("n02276258", "n02281787", "animal", "butterfly"),  # admiral .. lycaenid
    ("n02317335", "n02321529", "animal", ""),  # starfish, sea urchin, sea cucumber
    ("n02325366", "n02328150", "animal", "rabbit,bunny"),  # wood rabbit, hare, Angora
    ("n02342885", "n02364673", "animal", ""),  # hamster .. guinea pig
    ("n02389026", "n02389026", "animal", "horse,pony"),  # sorrel
    ("n02391049", "n02398521", "animal", ""),  # zebra, hog, boar, warthog, hippopotamus
    ("n02403003", "n02410509", "animal", "cow,bull"),  # ox, water buffalo, bison
    ("n02412080", "n02415577", "animal", "sheep"),  # ram, bighorn
    ("n02417914", "n02417914", "animal", "goat"),  # ibex
    ("n02422106", "n02423022", "animal", "deer"),  # hartebeest, impala, gazelle
    ("n02437312", "n02437312", "animal", "camel"),  # Arabian camel
    ("n02437616", "n02457408", "animal", ""),  # llama, weasel .. three-toed sloth
    ("n02480495", "n02500267", "animal", "monkey"),  # orangutan .. indri
    ("n02504013", "n02504458", "animal", "elephant"),  # Indian, African elephant
    ("n02509815", "n02510455", "animal", "bear"),  # lesser, giant panda
    ("n02514041", "n02655020", "animal", "fish"),  # barracouta .. puffer
    ("n07579787", "n07579787", "food", "plate;food"),  # plate
    ("n07583066", "n07880968", "food", "food,meal"),  # guacamole .. burrito
    ("n07892512", "n07932039", "drink", "drink"),  # red wine, espresso, cup, eggnog
    ("n09193705", "n09472597", "scene", ""),  # alp .. volcano: by the table
    ("n09835506", "n10565667", "person", ""),  # ballplayer, groom, scuba diver: people, never
    ("n11879895", "n12057211", "plant", "flower"),  # rapeseed, daisy, lady's slipper
    ("n12144580", "n12144580", "plant", "corn"),  # corn
    ("n13133613", "n13133613", "plant", "corn"),  # ear (of corn)
)
# The kinds that guide captions; sports equipment, clothing and people do not (Flickr8k's captions
# name them in their own way: "a soccer player", not "a soccer ball").
GUIDED_KINDS = ("animal", "food", "drink", "plant", "vehicle", "furniture", "household", "instrument",
                "structure", "scene")
# Words for people: with the words of the map, the words a guided caption must not lose.
PERSON_WORDS = ("man", "woman", "boy", "girl", "child", "kid", "baby", "person", "lady", "guy", "toddler",
                "teenager", "player", "biker", "skier", "surfer", "swimmer", "climber", "rider", "crowd")

Tiers = Tuple[Tuple[str, ...], ...]  # names, most specific tier first; a name is a word or "first second"


def parse_names(cell: str) -> Tiers:
    """'canoe,kayak;boat' -> (('canoe', 'kayak'), ('boat',)); '-' or '' -> ()."""
    if cell.strip() in ("", "-"):
        return ()
    return tuple(tuple(name.strip() for name in tier.split(",") if name.strip()) for tier in cell.split(";"))


def read_table(path: str = CLASS_WORDS_TABLE) -> Dict[str, Tuple[str, Tiers]]:
    """The reviewed table: WordNet id -> (kind, tiers of names); no names ('-'): the class never guides."""
    table = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader((line for line in handle if not line.startswith("#")), delimiter="\t"):
            table[row["wnid"]] = (row["kind"], parse_names(row["words"]))
    return table


def category_of(wnid: str) -> Tuple[str, Tiers]:
    """(kind, category names) of the range the class falls in; ("", ()) outside every range."""
    for first, last, kind, names in RANGES:
        if first <= wnid <= last:
            return kind, parse_names(names)
    return "", ()


def label_head(label: str) -> str:
    """The label's last word, lowercased: Egyptian_cat -> cat, black-and-tan_coonhound -> coonhound."""
    return label.replace("-", "_").split("_")[-1].lower()


def class_names(classes: ImageNetClasses, table_path: str = CLASS_WORDS_TABLE) -> List[Tuple[str, Tiers]]:
    """Each class's (kind, tiers of names), before any vocabulary: the table's, else the rule's (its
    label's last word, then its category's names)."""
    table = read_table(table_path)
    names = []
    for wnid, label in zip(classes.wnids, classes.labels):
        if wnid in table:
            names.append(table[wnid])
            continue
        kind, category = category_of(wnid)
        head = label_head(label)
        tiers = category if any(head in tier for tier in category) else ((head,),) + category
        names.append((kind, tiers if kind else ()))
    return names


@functools.lru_cache(maxsize=1)
def inflection():
    import inflect

    return inflect.engine()


@functools.lru_cache(maxsize=None)
def plural(name: str) -> str:
    """The plural of a noun, or of a two-word name's last word (puppy -> puppies, goose -> geese)."""
    *first, last = name.split()
    return " ".join(first + [inflection().plural_noun(last) or last])


@dataclass(frozen=True)
class WordUnit:
    """Synonyms that name the same things, as vocabulary ids: single words, and at most one two-word
    phrase (its first word, and the words that may follow it: "hot" -> "dog", "dogs"; -1: none)."""
    words: Tuple[int, ...]
    phrase_first: int
    phrase_second: Tuple[int, ...]
    label: str  # its names joined by '|', as shown: "canoe|kayak"


@dataclass
class ClassWords:
    """For one vocabulary: the word units, and for each class the units that name it, most specific first
    (empty: it does not guide), its kind; and the vocabulary's words for people."""
    units: List[WordUnit]
    class_units: List[Tuple[int, ...]]
    kinds: List[str]
    person_words: Tuple[int, ...]

    def kept_words(self, vocabulary_size: int) -> np.ndarray:
        """(vocabulary,) ids: for each word a guided caption must keep, the word that counts as keeping it
        (its unit's first word: "dogs" and "puppy" keep "dog"; any person word keeps a person: "man" keeps
        "girl"); -1 for the words it may drop."""
        kept = np.full(vocabulary_size, -1, np.int32)
        for unit in self.units:
            kept[list(unit.words)] = unit.words[0] if unit.words else -1
        kept[list(self.person_words)] = self.person_words[0] if self.person_words else -1
        return kept

    @property
    def mapped(self) -> int:
        """How many classes can guide."""
        return sum(bool(units) for units in self.class_units)

    def names(self, class_index: int) -> List[str]:
        """The class's units as shown, most specific first: ['canoe|kayak', 'boat']."""
        return [self.units[unit].label for unit in self.class_units[class_index]]

    def more_specific(self) -> np.ndarray:
        """(units, units) booleans: [a, b] where a is more specific than b (a class names a before b),
        closed over chains (retriever before dog before animal)."""
        specific = np.zeros((len(self.units), len(self.units)), bool)
        for units in self.class_units:
            for position, unit in enumerate(units):
                specific[unit, list(units[position + 1:])] = True
        while True:
            closed = specific | ((specific.astype(np.int32) @ specific.astype(np.int32)) > 0)
            if (closed == specific).all():
                break
            specific = closed
        both = np.argwhere(specific & specific.T)
        if len(both):
            a, b = both[0]
            raise ValueError(f"{CLASS_WORDS_TABLE}: '{self.units[a].label}' and '{self.units[b].label}' are each named "
                             f"before the other by some class; put them in one order")
        return specific


def unit_of(names: Sequence[str], vocabulary: Vocabulary) -> WordUnit:
    """The vocabulary's words for these synonyms (each name with its plural); ValueError for two phrases."""
    words, phrases, shown = [], [], []
    for name in names:
        forms = [form for form in dict.fromkeys((name, plural(name)))
                 if all(part in vocabulary.ids for part in form.split())]
        if forms:
            shown.append(name)
        for form in forms:
            parts = form.split()
            if len(parts) == 1:
                words.append(vocabulary.ids[form])
            else:
                phrases.append((vocabulary.ids[parts[0]], vocabulary.ids[parts[1]]))
    if len({first for first, _ in phrases}) > 1:
        raise ValueError(f"{CLASS_WORDS_TABLE}: the synonyms {'|'.join(names)} have two phrases with different first "
                         f"words; a word unit takes one")
    return WordUnit(tuple(words), phrases[0][0] if phrases else -1, tuple(second for _, second in phrases),
                    "|".join(shown))


def merged_tiers(names: List[Tuple[str, Tiers]]) -> Dict[str, str]:
    """Each name -> a representative of its synonym set (the names sharing a tier, transitively)."""
    parent: Dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for _, tiers in names:
        for tier in tiers:
            for name in tier:
                parent[root(name)] = root(tier[0])
    return {name: root(name) for name in parent}


def class_words(classes: ImageNetClasses, vocabulary: Vocabulary, kinds: Sequence[str] = GUIDED_KINDS,
                table_path: str = CLASS_WORDS_TABLE) -> ClassWords:
    """The map for this vocabulary; classes of kinds outside `kinds` do not guide."""
    names = class_names(classes, table_path)
    guiding = [(kind, tiers if kind in kinds else ()) for kind, tiers in names]
    roots = merged_tiers(guiding)
    synonyms: Dict[str, List[str]] = {}
    for name, root in roots.items():
        synonyms.setdefault(root, []).append(name)
    units: List[WordUnit] = []
    index_of: Dict[str, int] = {}
    class_units = []
    for _, tiers in guiding:
        chosen: List[int] = []
        for tier in tiers:
            root = roots[tier[0]]
            if root not in index_of:
                unit = unit_of(sorted(synonyms[root], key=lambda name: list(roots).index(name)), vocabulary)
                index_of[root] = len(units) if unit.words or unit.phrase_second else -1
                if index_of[root] >= 0:
                    units.append(unit)
            if index_of[root] >= 0 and index_of[root] not in chosen:
                chosen.append(index_of[root])
        class_units.append(tuple(chosen))
    person = [vocabulary.ids[form] for word in PERSON_WORDS for form in (word, plural(word)) if form in vocabulary.ids]
    return ClassWords(units, class_units, [kind for kind, _ in names], tuple(dict.fromkeys(person)))
