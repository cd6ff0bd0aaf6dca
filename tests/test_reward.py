"""The vectorised CIDEr-D reward against pycocoevalcap's CIDEr-D, which the evaluation reports."""
from __future__ import annotations

import random

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from conftest import SHARED_FLICKR, needs_shared
from training.reward import CiderD
from inputs.vocabulary import END_ID, PAD_ID, Vocabulary

WORDS = "a the dog dogs cat man woman runs sits on in with grass snow red blue ball water".split()


def random_corpus(seed: int, images: int, references: int = 5):
    rng = random.Random(seed)

    def caption():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))

    corpus = [[caption() for _ in range(rng.randint(1, references))] for _ in range(images)]
    # Hypotheses: random captions, copies of a reference, a reference with words dropped, an empty
    # caption, and words that no reference has.
    hypotheses = []
    for index, refs in enumerate(corpus):
        kind = index % 5
        if kind == 0:
            hypotheses.append(caption())
        elif kind == 1:
            hypotheses.append(refs[0])
        elif kind == 2:
            hypotheses.append(" ".join(refs[-1].split()[:-1]))
        elif kind == 3:
            hypotheses.append("zebra " + caption() + " zebra xylophone")
        else:
            hypotheses.append(refs[0] + " " + refs[0])
    return corpus, hypotheses


def pycocoevalcap_cider(references, hypotheses):
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [text] for i, text in enumerate(hypotheses)}
    corpus, per_image = Cider().compute_score(gts, res)
    return float(corpus), np.asarray(per_image, float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_pycocoevalcap_per_image_and_corpus_when_both_use_the_scored_references(seed):
    references, hypotheses = random_corpus(seed, images=60)
    expected_corpus, expected = pycocoevalcap_cider(references, hypotheses)
    vocabulary = Vocabulary.build([c for refs in references for c in refs], min_count=3)
    scores = CiderD(references, vocabulary.tokens, count_end=False).score_texts(hypotheses, range(len(hypotheses)))
    assert scores == pytest.approx(expected, abs=1e-6)
    assert scores.mean() == pytest.approx(expected_corpus, abs=1e-6)
    assert expected.max() > 1.0 and expected.min() == 0.0  # the corpus exercises high and zero scores


def test_end_counts_as_a_word_and_token_ids_score_like_text():
    references, hypotheses = random_corpus(5, images=40)
    vocabulary = Vocabulary.build([c for refs in references for c in refs], min_count=1)
    reward = CiderD(references, vocabulary.tokens, count_end=True)
    # pycocoevalcap with a word standing for <end> appended to every caption gives the same numbers.
    marked = [[f"{c} endmark".strip() for c in refs] for refs in references]
    _, expected = pycocoevalcap_cider(marked, [f"{h} endmark".strip() for h in hypotheses])
    images = np.arange(len(hypotheses))
    assert reward.score_texts(hypotheses, images) == pytest.approx(expected, abs=1e-6)

    # The same captions as the decoder writes them: ids, <end>, <pad>; several samples per image.
    known = [h for h in hypotheses if all(w in vocabulary.ids for w in h.split())]
    rows = np.full((len(known), 30), PAD_ID, np.int64)
    for row, text in enumerate(known):
        ids = [vocabulary.ids[w] for w in text.split()] + [END_ID]
        rows[row, :len(ids)] = ids
    picked = np.array([hypotheses.index(h) for h in known])
    assert reward.score_tokens(rows, picked) == pytest.approx(reward.score_texts(known, picked), abs=1e-9)

    # A caption cut at the maximum length (no <end>) loses the "... <end>" n-grams.
    full = references[0][0]
    ids = [vocabulary.ids[w] for w in full.split()]
    ended = np.array([ids + [END_ID]])
    cut = np.array([ids])
    assert reward.score_tokens(cut, [0])[0] < reward.score_tokens(ended, [0])[0]


def test_bad_references_are_a_clear_error():
    with pytest.raises(ValueError, match="at least one reference"):
        CiderD([["a dog"], []], ["<pad>", "<unk>", "<start>", "<end>"])
    with pytest.raises(ValueError, match="one row of token ids per image"):
        CiderD([["a dog"]], ["<pad>", "<unk>", "<start>", "<end>"]).score_tokens(np.zeros((2, 3)), [0])


@needs_shared
def test_equals_pycocoevalcap_on_real_flickr8k_captions():
    from data_loader import load_dataset

    dataset = load_dataset(SHARED_FLICKR, need_images=False)
    names = dataset.splits["dev"][:300]
    references = [dataset.captions[name] for name in names]
    # Each image's first caption as its hypothesis, scored against the other four; and a neighbour's caption.
    others = [refs[1:] for refs in references]
    hypotheses = [refs[0] if i % 2 else references[i - 1][0] for i, refs in enumerate(references)]
    _, expected = pycocoevalcap_cider(others, hypotheses)
    vocabulary = Vocabulary.build([c for refs in others for c in refs], min_count=5)
    scores = CiderD(others, vocabulary.tokens, count_end=False).score_texts(hypotheses, range(len(names)))
    assert scores == pytest.approx(expected, abs=1e-6)
