"""Caption scores under one stated protocol.

BLEU: NLTK `corpus_bleu`, all references of each image, both sides cleaned by `clean_caption`
(the same cleaning as training), no <start>/<end> on either side, cumulative weights
BLEU-1 (1,0,0,0), BLEU-2 (1/2,1/2,0,0), BLEU-3 (1/3,1/3,1/3,0), BLEU-4 (1/4,1/4,1/4,1/4), no smoothing.
"""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Dict, List, Sequence

from vocabulary import clean_caption

BLEU_WEIGHTS = {
    "BLEU-1": (1.0, 0.0, 0.0, 0.0),
    "BLEU-2": (1 / 2, 1 / 2, 0.0, 0.0),
    "BLEU-3": (1 / 3, 1 / 3, 1 / 3, 0.0),
    "BLEU-4": (1 / 4, 1 / 4, 1 / 4, 1 / 4),
}
PROTOCOL = ("NLTK corpus_bleu over all references per image; hypotheses and references cleaned alike "
            "(lowercase, no punctuation, no tokens with digits); no <start>/<end> tokens; cumulative weights "
            "BLEU-1 (1,0,0,0), BLEU-2 (1/2,1/2,0,0), BLEU-3 (1/3,1/3,1/3,0), BLEU-4 (1/4,1/4,1/4,1/4); no smoothing")


def bleu_scores(references: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> Dict[str, float]:
    """Corpus BLEU-1..4 of hypotheses[i] against references[i] (a list of captions per image)."""
    from nltk.translate.bleu_score import corpus_bleu

    if len(references) != len(hypotheses) or not hypotheses:
        raise ValueError(f"need one non-empty reference list per hypothesis, got {len(references)} and {len(hypotheses)}")
    reference_tokens = [[clean_caption(text).split() for text in texts] for texts in references]
    hypothesis_tokens = [clean_caption(text).split() for text in hypotheses]
    with warnings.catch_warnings():
        # NLTK warns when an n-gram order has no match; the score is then 0, which is what we report.
        warnings.simplefilter("ignore")
        values = corpus_bleu(reference_tokens, hypothesis_tokens, weights=list(BLEU_WEIGHTS.values()))
    return {name: float(value) for name, value in zip(BLEU_WEIGHTS, values)}


def most_common_caption(captions: List[str]) -> str:
    """The caption-prior baseline: the most frequent training caption (ties: the first seen)."""
    counts = Counter(captions)
    return max(counts, key=lambda caption: (counts[caption], -captions.index(caption)))
