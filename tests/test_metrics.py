"""The reported metrics against values worked out by hand, including the edge cases."""
from __future__ import annotations

import math
import shutil

import pytest

from scoring import metrics
from scoring.metrics import bleu_scores, coco_scores

REFERENCES = ["a dog runs on the grass", "a dog is running"]


def test_bleu_and_rouge_by_hand_for_a_hypothesis_with_no_4gram_match():
    # "a dog runs fast": 1-grams 3/4 match, 2-grams 2/3 ("a dog", "dog runs"), 3-grams 1/2 ("a dog runs"),
    # 4-grams 0/1. The closest reference length is 4, so there is no brevity penalty.
    scores = coco_scores([REFERENCES], ["A dog runs fast."], metrics=("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4",
                                                                      "ROUGE-L", "CIDEr-D"))
    assert scores.corpus["BLEU-1"] == pytest.approx(3 / 4, abs=1e-6)
    assert scores.corpus["BLEU-2"] == pytest.approx(math.sqrt(3 / 4 * 2 / 3), abs=1e-6)
    assert scores.corpus["BLEU-3"] == pytest.approx((3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3), abs=1e-6)
    # No 4-gram matches: the COCO scorer's smoothing (1e-15 / count) leaves only a trace.
    assert scores.corpus["BLEU-4"] < 1e-3
    assert bleu_scores([REFERENCES], ["a dog runs fast"])["BLEU-4"] < 1e-10  # NLTK: 0 up to float underflow
    assert bleu_scores([REFERENCES], ["a dog runs fast"])["BLEU-3"] == pytest.approx(scores.corpus["BLEU-3"], abs=1e-6)
    # ROUGE-L: best LCS precision 3/4 and recall 3/6 (both against the first reference), beta 1.2.
    precision, recall, beta = 3 / 4, 3 / 6, 1.2
    expected = (1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision)
    assert scores.corpus["ROUGE-L"] == pytest.approx(expected, abs=1e-6)
    # One image: every n-gram occurs in the only image, so its idf is 0 and CIDEr-D is 0 by definition.
    assert scores.corpus["CIDEr-D"] == 0.0
    assert scores.per_image[0]["BLEU-1"] == pytest.approx(3 / 4, abs=1e-6)


def test_cider_by_hand_and_an_empty_hypothesis_scores_zero_without_failing():
    # Two images with no shared words but "a": a caption equal to its only reference has cosine 1 for
    # 1-, 2- and 3-grams and no 4-grams, so CIDEr-D = 10 * (1 + 1 + 1 + 0) / 4 = 7.5.
    references = [["a dog runs"], ["a cat sleeps"]]
    exact = coco_scores(references, ["a dog runs", "a cat sleeps"], metrics=("CIDEr-D", "ROUGE-L"))
    assert exact.corpus["CIDEr-D"] == pytest.approx(7.5, abs=1e-6)
    assert [s["CIDEr-D"] for s in exact.per_image] == pytest.approx([7.5, 7.5], abs=1e-6)
    assert exact.corpus["ROUGE-L"] == pytest.approx(1.0)

    with_empty = coco_scores(references, ["a dog runs", ""], metrics=("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D"))
    assert with_empty.per_image[1] == {"BLEU-1": 0.0, "BLEU-4": 0.0, "ROUGE-L": 0.0, "CIDEr-D": 0.0}
    assert with_empty.corpus["CIDEr-D"] == pytest.approx(7.5 / 2, abs=1e-6)
    # Corpus BLEU-1: 3 matches in 3 words, reference length 3 + 3 (closest to 3 and to 0): brevity penalty e^(1-2).
    assert with_empty.corpus["BLEU-1"] == pytest.approx(math.exp(1 - 6 / 3), abs=1e-6)


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java, which is not installed here")
def test_meteor_with_java_is_a_score_and_zero_for_an_empty_hypothesis():
    scores = coco_scores([REFERENCES, REFERENCES], ["a dog runs on the grass", ""], metrics=("METEOR",))
    assert scores.unavailable == {}
    assert scores.per_image[0]["METEOR"] > 0.9
    assert scores.per_image[1]["METEOR"] == 0.0
    assert 0.0 < scores.corpus["METEOR"] < 1.0


def test_meteor_without_java_is_unavailable_not_zero(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    scores = coco_scores([REFERENCES], ["a dog runs"], metrics=("METEOR", "BLEU-1"))
    assert scores.corpus["METEOR"] is None and scores.per_image[0]["METEOR"] is None
    assert "Java" in scores.unavailable["METEOR"]
    assert scores.corpus["BLEU-1"] == pytest.approx(math.exp(1 - 4 / 3), abs=1e-6)  # brevity penalty only
    assert metrics.format_score(scores.corpus["METEOR"]) == "n/a"


def test_mismatched_inputs_are_a_clear_error():
    with pytest.raises(ValueError, match="one non-empty reference list per hypothesis"):
        coco_scores([REFERENCES], ["a", "b"])
    with pytest.raises(ValueError, match="at least one reference"):
        coco_scores([[]], ["a dog"])
