"""The map from ImageNet classes to caption words (decoders/class_words.py, data/imagenet_class_words.tsv)
and the constraints tags put on a caption (decoders/tags.py)."""
import numpy as np
import pytest

from conftest import SHARED, needs_shared
from decoders.class_words import CLASS_WORDS_TABLE, GUIDED_KINDS, class_words, read_table
from inputs.imagenet import Classifier, ImageNetClasses, read_class_index
from inputs.vocabulary import Vocabulary

CLASS_INDEX = f"{SHARED}/weights/imagenet_class_index.json"
FLICKR_WORDS = ("cat cats bird birds canoe canoes kayak kayaks boat boats couch sofa bench benches food meal dog dogs "
                "puppy retriever kite kites jersey shirt man toilet pizza").split()


@pytest.fixture(scope="module")
def classes():
    return read_class_index(CLASS_INDEX)


def words_of(classes, vocabulary, label):
    mapping = class_words(classes, vocabulary)
    return mapping.words(vocabulary, classes.labels.index(label))


@needs_shared
@pytest.mark.parametrize("label, expected", [
    ("tabby", ["cat", "cats"]), ("Egyptian_cat", ["cat", "cats"]), ("macaw", ["bird", "birds"]),
    ("canoe", ["canoe", "canoes", "kayak", "kayaks", "boat", "boats"]), ("studio_couch", ["couch", "sofa"]),
    ("park_bench", ["bench", "benches"]), ("hotdog", ["food"]), ("pizza", ["pizza", "food", "meal"]),
    ("golden_retriever", ["retriever", "dog", "dogs", "puppy"]), ("toilet_seat", ["toilet"]),
    ("kite", ["bird", "birds"]),  # the bird, not the toy: the table corrects the label's word
    ("jersey", []), ("ballplayer", []),  # clothing and people never guide
])
def test_the_rule_and_the_table_name_the_classes(classes, label, expected):
    assert words_of(classes, Vocabulary(FLICKR_WORDS), label) == expected


@needs_shared
def test_any_vocabulary_gets_its_own_words_and_classes_without_words_do_not_guide(classes):
    small = Vocabulary(["boat", "cat", "man"])
    assert words_of(classes, small, "canoe") == ["boat"]
    assert words_of(classes, small, "tabby") == ["cat"]
    assert words_of(classes, small, "macaw") == []  # no "bird": the class does not guide
    mapping = class_words(classes, small)
    assert 0 < mapping.mapped < 1000
    assert class_words(classes, Vocabulary(["the", "of"])).mapped == 0
    # Classes of a kind left out of the guiding kinds never guide.
    assert class_words(classes, Vocabulary(FLICKR_WORDS), kinds=("vehicle",)).words(
        Vocabulary(FLICKR_WORDS), classes.labels.index("tabby")) == []


@needs_shared
def test_the_reviewed_table_names_real_classes_with_single_words(classes):
    by_wnid = dict(zip(classes.wnids, classes.labels))
    with open(CLASS_WORDS_TABLE, encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle if not line.startswith("#")][1:]
    assert len(rows) == len(read_table()) > 150
    for wnid, label, kind, words in rows:
        assert by_wnid[wnid] == label, wnid
        assert kind in GUIDED_KINDS + ("sports",)
        assert words == "-" or all(word.isalpha() and word.islower() for word in words.split(","))


def tagger_for(labels_and_words, threshold=0.5):
    """A tagger over these (label, words) classes; its classifier is not used: constraints take probabilities."""
    from decoders.class_words import ClassWords
    from decoders.tags import Tagger

    vocabulary = Vocabulary(["cat", "cats", "boat", "dog", "sofa"])
    word_ids = [tuple(vocabulary.ids[word] for word in words) for _, words in labels_and_words]
    classes = ImageNetClasses([f"n{index:08d}" for index in range(len(word_ids))],
                              [label for label, _ in labels_and_words])
    classifier = Classifier(np.eye(len(word_ids), dtype=np.float32), np.zeros(len(word_ids), np.float32), "test")
    return Tagger(classifier, classes, ClassWords(word_ids, ["animal"] * len(word_ids)), len(vocabulary),
                  threshold), vocabulary


def test_tags_of_one_word_set_add_up_and_the_two_likeliest_unnamed_become_constraints():
    tagger, vocabulary = tagger_for([("tabby", ("cat", "cats")), ("Egyptian_cat", ("cat", "cats")),
                                     ("canoe", ("boat",)), ("studio_couch", ("sofa",)), ("jersey", ())])
    probabilities = np.array([[0.3, 0.3, 0.0, 0.0, 0.4],   # cats 0.6: one constraint
                              [0.2, 0.2, 0.55, 0.05, 0.0],  # boat 0.55 before cat 0.4: cat is under 0.5
                              [0.0, 0.0, 0.5, 0.5, 0.0],    # two constraints
                              [0.0, 0.0, 0.1, 0.0, 0.9]],   # only a class that does not guide
                             np.float32)
    unguided = np.zeros((4, 3), np.int32)
    unguided[2, 0] = vocabulary.ids["boat"]  # the third caption names the boat already
    satisfies, _, values = (tensor.numpy() for tensor in tagger.constraints(probabilities, unguided))
    words = [[sorted(vocabulary.tokens[w] for w in np.flatnonzero(row)) for row, value in zip(image, image_values)
              if value > 0] for image, image_values in zip(satisfies, values)]
    assert words == [[["cat", "cats"]], [["boat"]], [["sofa"]], []]
    np.testing.assert_allclose(values[0], [0.6, 0.0], rtol=1e-6)
    satisfies, _, values = (tensor.numpy() for tensor in tagger.constraints(probabilities, unguided, 0.35))
    assert (values[1] > 0).sum() == 2 and values[1][0] == pytest.approx(0.55)  # boat, then cat 0.4
    assert tagger.top_tags(probabilities)[3] == [("jersey", pytest.approx(0.9)), ("canoe", pytest.approx(0.1)),
                                                 ("tabby", 0.0)]
