"""The selection policy of guided decoding (tagging/policy.py), on a hand-made map of six classes: word-level
evidence, the most specific word first, k-1 of k, the words a guided caption must keep, the margin, sure tags."""
import numpy as np
import pytest

from inputs.vocabulary import Vocabulary
from tagging.class_words import class_words
from tagging.imagenet import Classifier, ImageNetClasses
from tagging.policy import PolicySettings, TagPolicy

TABLE = """wnid\tlabel\tkind\twords
n90000001\ttabby\tanimal\tcat
n90000002\tEgyptian_cat\tanimal\tcat
n90000003\tcanoe\tvehicle\tcanoe,kayak;boat
n90000004\tspeedboat\tvehicle\tboat
n90000005\tstudio_couch\tfurniture\tcouch,sofa
n90000006\tjersey\tclothing\tshirt
n90000007\ttoy_poodle\tanimal\tpoodle;dog
n90000008\thotdog\tfood\thot dog;food
"""
LABELS = ["tabby", "Egyptian_cat", "canoe", "speedboat", "studio_couch", "jersey", "toy_poodle", "hotdog"]
WORDS = "a man dog dogs poodle cat cats boat boats canoe kayak kayaks couch sofa shirt ball on hot food girl".split()


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    table = tmp_path_factory.mktemp("table") / "words.tsv"
    table.write_text(TABLE, encoding="utf-8")
    classes = ImageNetClasses([f"n9000000{index + 1}" for index in range(len(LABELS))], LABELS)
    vocabulary = Vocabulary(WORDS)
    words = class_words(classes, vocabulary, table_path=str(table))
    classifier = Classifier(np.eye(len(LABELS), dtype=np.float32), np.zeros(len(LABELS), np.float32), "test")
    return TagPolicy(classifier, classes, words, len(vocabulary), PolicySettings(0.5, 3, 0.5, 0.9)), vocabulary


def select(policy_and_vocabulary, probabilities, captions, floor=0.5, k=3, sure=2.0):
    """Each image's constraints as their units' labels (likeliest first), with required and kept words."""
    policy, vocabulary = policy_and_vocabulary
    tokens = np.zeros((len(captions), 6), np.int32)
    for row, caption in enumerate(captions):
        tokens[row, :len(caption.split())] = [vocabulary.ids[word] for word in caption.split()]
    probabilities = np.array([row + [0.0] * (len(LABELS) - len(row)) for row in probabilities], np.float32)
    chosen = policy.select(probabilities, tokens, PolicySettings(floor, k, 0.5, sure))
    labels = [[policy.unit_labels[unit] for unit, value in zip(units, values) if value > 0]
              for units, values in zip(chosen.units.numpy(), chosen.evidence.numpy())]
    kept = [sorted(vocabulary.tokens[token] for token in row if token >= 0) for row in chosen.keep.numpy()]
    return labels, chosen.evidence.numpy(), list(chosen.required.numpy()), kept


def test_two_classes_of_one_word_add_up_and_a_class_with_two_words_counts_for_both(policy):
    labels, evidence, _, _ = select(policy, [[0.3, 0.3], [0.0, 0.0, 0.3, 0.3]], ["a man", "a man"])
    assert labels == [["cat"], ["boat"]]  # tabby + Egyptian cat 0.6; canoe + speedboat 0.6 for "boat"
    assert evidence[0][0] == pytest.approx(0.6) and evidence[1][0] == pytest.approx(0.6)


def test_the_most_specific_word_first_and_a_generic_word_does_not_name_a_specific_one(policy):
    labels, _, _, _ = select(policy, [[0, 0, 0.6, 0.2], [0, 0, 0.82], [0, 0, 0.1, 0.8], [0, 0, 0.82]],
                             ["a man", "a boat", "a kayak", "a kayak"])
    # canoe 0.6 guides to "canoe|kayak", not to "boat" (0.8); a caption that says "boat" is still guided to
    # the kayak; "kayak" names the boat, and the canoe: nothing left to ask.
    assert labels == [["canoe|kayak"], ["canoe|kayak"], [], []]


def test_a_two_word_name_is_named_only_by_its_two_words_in_a_row(policy):
    hot_dog = [0, 0, 0, 0, 0, 0, 0, 0.9]
    labels, _, _, _ = select(policy, [hot_dog] * 4, ["a man on a dog", "a dog on a hot", "a hot dog", "a hot dogs"])
    assert labels == [["hot dog"], ["hot dog"], [], []]  # "food" is more generic: "hot dog" asks first


def test_the_top_k_over_the_floor_guide_and_the_caption_must_meet_k_minus_1_of_k(policy):
    probabilities = [[0.5, 0.1, 0.0, 0.0, 0.25, 0.0, 0.15]]
    labels, _, required, _ = select(policy, probabilities, ["a man"], floor=0.1)
    assert labels[0] == ["cat", "couch|sofa", "poodle"] and required[0] == 2  # 3 constraints: meet 2
    two, _, required, _ = select(policy, probabilities, ["a man"], floor=0.1, k=2)
    assert two == [["cat", "couch|sofa"]] and required == [1]  # 2: meet 1
    one, _, required, _ = select(policy, probabilities, ["a man"], floor=0.2)
    assert one == [["cat", "couch|sofa"]] and required == [1]  # poodle 0.15 is under the floor
    clothing, _, required, _ = select(policy, [[0, 0, 0, 0, 0, 0.9]], ["a man"])
    assert clothing == [[]] and required == [0]  # a kind that never guides: no unit at all


def test_content_words_are_kept_unless_a_more_specific_word_replaces_them(policy):
    _, _, _, kept = select(policy, [[0, 0, 0, 0, 0, 0, 0.9], [0.9], [0.9]],
                           ["a man dog on a ball", "a man dog on a", "a girl dogs"])
    # poodle replaces dog; "cat" must keep both the man and the dog. Function words are free to change.
    # A word is kept by its unit's first word's class ("dogs" counts as "dog"), any person by "man".
    assert kept == [["man"], ["dog", "man"], ["dog", "man"]]


def test_a_sure_tag_may_replace_content_words_and_gets_twice_the_margin(policy):
    _, _, _, kept = select(policy, [[0.9], [0.3, 0.65], [0.89]], ["a man dog on a ball", "a girl on a couch",
                                                                "a man dog on a ball"], sure=0.9)
    # cat 0.9 (or 0.3 + 0.65) reaches the sure level: nothing is kept; at 0.89 the man and the dog stay.
    assert kept == [[], [], ["dog", "man"]]
    cat = np.zeros((2, len(LABELS)), np.float32)
    cat[:, 0] = [0.9, 0.89]
    sure = policy[0].select(cat, np.zeros((2, 6), np.int32), PolicySettings(0.5, 3, 0.5, 0.9)).sure.numpy()
    assert list(sure) == [True, False]
    margins = TagPolicy.margins(np.array([True, False]), 0.5).numpy()
    assert list(margins) == [1.0, 0.5]
    # plain -1.0 per token, guided -1.8: only the sure image's caption is accepted.
    accepted = TagPolicy.accepts(np.array([True, True]), np.array([-9.0, -9.0]), np.array([5, 5]),
                                 np.array([-5.0, -5.0]), np.array([5, 5]), margins).numpy()
    assert list(accepted) == [True, False]


def test_the_guided_caption_replaces_the_plain_one_only_within_the_margin():
    # per-token log-probabilities: plain -1.0 (-5 over 5 tokens); guided -1.4, -1.6 and, unfound, -1.0
    accepted = TagPolicy.accepts(np.array([True, True, False]), np.array([-7.0, -9.6, -6.0]), np.array([5, 6, 6]),
                                 np.array([-5.0, -5.0, -6.0]), np.array([5, 5, 6]), 0.5).numpy()
    assert list(accepted) == [True, False, False]


def test_settings_that_cannot_work_are_one_line_each():
    for settings, flag in (((0.0, 3, 0.5, 0.9), "--guide_threshold"), ((0.5, 4, 0.5, 0.9), "--guide_constraints"),
                           ((0.5, 3, -1.0, 0.9), "--guide_margin"), ((0.5, 3, 0.5, 0.0), "--guide_sure")):
        with pytest.raises(ValueError, match=flag):
            PolicySettings(*settings).check()
