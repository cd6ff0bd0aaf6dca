"""The map from ImageNet classes to caption words (tagging/class_words.py, tagging/class_words.tsv): the rule
and the reviewed table, names most specific first, plurals from inflect, two-word names, word units."""
import os
import re

import pytest

from config import PRETRAINED_DIR
from conftest import PROJECT
from inputs.vocabulary import Vocabulary
from tagging.class_words import CLASS_WORDS_TABLE, GUIDED_KINDS, class_names, class_words, plural, read_table
from tagging.imagenet import CLASS_INDEX, read_class_index

FLICKR_WORDS = ("cat cats bird birds canoe canoes kayak kayaks boat boats couch sofa bench benches food meal dog dogs "
                "puppy puppies retriever kite kites jersey shirt man toilet pizza bull grey monster cream ice hot "
                "german shepherd terrier parrot lizard geese sheeps").split()


@pytest.fixture(scope="module")
def classes():
    return read_class_index(CLASS_INDEX)


def names_of(classes, vocabulary, label):
    return class_words(classes, vocabulary).names(classes.labels.index(label))


@pytest.mark.parametrize("label, expected", [
    ("tabby", ["cat"]), ("Egyptian_cat", ["cat"]), ("macaw", ["bird"]), ("kite", ["bird"]),  # the bird, not the toy
    ("canoe", ["canoe|kayak", "boat"]), ("studio_couch", ["couch|sofa"]), ("park_bench", ["bench"]),
    ("pizza", ["pizza", "food|meal"]), ("golden_retriever", ["retriever", "dog|puppy"]), ("toilet_seat", ["toilet"]),
    # Labels whose last word is wrong for the class: the table names them.
    ("Boston_bull", ["terrier", "dog|puppy"]), ("African_grey", ["parrot", "bird"]), ("Gila_monster", ["lizard"]),
    ("ice_cream", ["ice cream", "food|meal"]), ("hotdog", ["hot dog", "food|meal"]),
    ("German_shepherd", ["german shepherd", "dog|puppy"]),
    ("jersey", []), ("ballplayer", []),  # clothing and people never guide
])
def test_the_rule_and_the_table_name_the_classes_most_specific_first(classes, label, expected):
    assert names_of(classes, Vocabulary(FLICKR_WORDS), label) == expected


def test_plurals_come_from_inflection_and_only_the_vocabulary_s_forms_count(classes):
    assert [plural(word) for word in ("puppy", "goose", "sheep", "bus", "hot dog")] == \
        ["puppies", "geese", "sheep", "buses", "hot dogs"]
    vocabulary = Vocabulary(FLICKR_WORDS)
    mapping = class_words(classes, vocabulary)
    unit_words = {unit.label: sorted(vocabulary.tokens[word] for word in unit.words) for unit in mapping.units}
    assert unit_words["dog|puppy"] == ["dog", "dogs", "puppies", "puppy"]
    assert unit_words["goose"] == ["geese"]  # the vocabulary has only the plural
    assert names_of(classes, vocabulary, "ram") == []  # the vocabulary has "sheeps", which is no plural of sheep


def test_a_two_word_name_needs_both_words_and_is_one_phrase(classes):
    mapping = class_words(classes, Vocabulary(FLICKR_WORDS))
    unit = next(unit for unit in mapping.units if unit.label == "hot dog")
    vocabulary = Vocabulary(FLICKR_WORDS)
    assert unit.words == () and unit.phrase_first == vocabulary.ids["hot"]
    assert sorted(vocabulary.tokens[word] for word in unit.phrase_second) == ["dog", "dogs"]
    without_hot = Vocabulary([word for word in FLICKR_WORDS if word != "hot"])
    assert names_of(classes, without_hot, "hotdog") == ["food|meal"]  # the generic word, where the phrase is missing


def test_any_vocabulary_gets_its_own_words_and_classes_without_words_do_not_guide(classes):
    small = Vocabulary(["boat", "cat", "man"])
    assert names_of(classes, small, "canoe") == ["boat"]
    assert names_of(classes, small, "macaw") == []  # no "bird": the class does not guide
    assert 0 < class_words(classes, small).mapped < 1000
    assert class_words(classes, Vocabulary(["the", "of"])).mapped == 0
    assert class_words(classes, Vocabulary(FLICKR_WORDS), kinds=("vehicle",)).names(classes.labels.index("tabby")) == []


def test_more_specific_is_the_order_classes_name_units_in(classes):
    mapping = class_words(classes, Vocabulary(FLICKR_WORDS))
    index = {unit.label: number for number, unit in enumerate(mapping.units)}
    specific = mapping.more_specific()
    assert specific[index["canoe|kayak"], index["boat"]] and not specific[index["boat"], index["canoe|kayak"]]
    assert specific[index["retriever"], index["dog|puppy"]] and not specific[index["cat"], index["dog|puppy"]]


def test_the_reviewed_table_names_real_classes_with_one_or_two_lowercase_words(classes):
    by_wnid = dict(zip(classes.wnids, classes.labels))
    with open(CLASS_WORDS_TABLE, encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle if not line.startswith("#")][1:]
    assert len(rows) == len(read_table()) > 150
    for wnid, label, kind, words in rows:
        assert by_wnid[wnid] == label, wnid
        assert kind in GUIDED_KINDS + ("sports",)
        assert words == "-" or all(re.fullmatch(r"[a-z]+( [a-z]+)?", name)
                                   for tier in words.split(";") for name in tier.split(",")), words
    # Every synonym set stays small: a tier that mixed two meanings would chain them into one unit.
    mapping = class_words(classes, Vocabulary(sorted({name for _, tiers in class_names(classes) for tier in tiers
                                                      for name in tier for name in name.split()})))
    assert max(len(unit.label.split("|")) for unit in mapping.units) <= 3
    mapping.more_specific()  # no two units each named before the other


def test_the_docs_counts_are_the_code_s():
    from inputs.run_folder import load_vocabulary

    with open(os.path.join(PROJECT, "docs", "guided_decoding.md"), encoding="utf-8") as handle:
        text = " ".join(handle.read().split())
    stated = re.search(r"On the shipped vocabulary (\d+) of the 1000 classes can guide, through (\d+) word units", text)
    table = re.search(r"by the reviewed table\*\* \((\d+) classes\)", text)
    mapping = class_words(read_class_index(CLASS_INDEX),
                          load_vocabulary(PRETRAINED_DIR))
    assert stated and table, "docs/guided_decoding.md no longer states the map's counts in the words this test reads"
    assert (int(stated.group(1)), int(stated.group(2)), int(table.group(1))) == \
        (mapping.mapped, len(mapping.units), len(read_table()))
