"""Caption scores under stated protocols.

COCO caption metrics (`pycocoevalcap`, the package the COCO evaluation server uses): BLEU-1..4,
METEOR (Java; reported as unavailable, never as 0, when Java is missing), ROUGE-L and CIDEr-D, on
captions cleaned by `clean_caption` (lowercase, no punctuation), which stands in for the server's
Java PTB tokenizer so the pure-Python metrics need no Java.

NLTK BLEU, the pipeline's own protocol: NLTK `corpus_bleu`, all references of each image, both sides cleaned by `clean_caption`
(the same cleaning as training), no <start>/<end> on either side, cumulative weights
BLEU-1 (1,0,0,0), BLEU-2 (1/2,1/2,0,0), BLEU-3 (1/3,1/3,1/3,0), BLEU-4 (1/4,1/4,1/4,1/4), no smoothing.
"""
from __future__ import annotations

import shutil
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from inputs.vocabulary import BAD_ENDINGS, clean_caption

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


def caption_statistics(captions: Sequence[str]) -> Dict[str, object]:
    """What scores hide: how many different captions, how many repeat a phrase of 3 words or more
    ("a man in a red shirt and a red shirt"), how many end on a function word ("a man in a")."""
    def repeats(words):
        trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        return len(trigrams) != len(set(trigrams))

    word_lists = [caption.split() for caption in captions]
    counts = Counter(captions)
    top, top_count = counts.most_common(1)[0] if counts else ("", 0)
    return {"distinct": len(counts), "repeated_phrase": sum(repeats(words) for words in word_lists),
            "bad_ending": sum(bool(words) and words[-1] in BAD_ENDINGS for words in word_lists),
            "unknown_word": sum("<unk>" in words for words in word_lists),
            "most_frequent": top, "most_frequent_count": top_count}


COCO_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")
COCO_PROTOCOL = ("pycocoevalcap 1.2 scorers (BLEU 'closest' reference length, METEOR 1.5 -l en -norm, ROUGE-L "
                 "beta 1.2, CIDEr-D sigma 6 with idf from the scored references), on captions cleaned like "
                 "training captions instead of the PTB tokenizer; scores on a 0-1 scale, CIDEr-D as the package "
                 "reports it (x10)")


@dataclass
class CocoScores:
    corpus: Dict[str, Optional[float]]  # None: the metric could not be computed (see `unavailable`)
    per_image: List[Dict[str, Optional[float]]]
    unavailable: Dict[str, str] = field(default_factory=dict)  # metric -> why


_meteor_scorer = None  # one Java process per Python process: starting it (paraphrase tables) takes seconds


def _meteor(references: Dict[int, List[str]], hypotheses: Dict[int, List[str]]):
    """METEOR through the package's Java scorer: (corpus, per image), or the reason it is unavailable."""
    global _meteor_scorer
    if shutil.which("java") is None:
        return None, None, "Java is not installed (METEOR 1.5 is a Java program)"
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        if _meteor_scorer is None or _meteor_scorer.meteor_p.poll() is not None:
            _meteor_scorer = Meteor()
        corpus, per_image = _meteor_scorer.compute_score(references, hypotheses)
    except (OSError, ValueError) as error:  # the Java process did not start or answered nonsense
        if _meteor_scorer is not None:  # its lock may be held and its pipes half read: start afresh next time
            _meteor_scorer.meteor_p.kill()
            _meteor_scorer = None
        return None, None, f"the METEOR Java process failed ({error})"
    return float(corpus), [float(value) for value in per_image], ""


def coco_scores(references: Sequence[Sequence[str]], hypotheses: Sequence[str],
                metrics: Sequence[str] = COCO_METRICS) -> CocoScores:
    """The COCO caption metrics of hypotheses[i] against references[i], for the corpus and per image."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(references) != len(hypotheses) or not hypotheses:
        raise ValueError(f"need one non-empty reference list per hypothesis, got {len(references)} and {len(hypotheses)}")
    gts = {i: [clean_caption(text) for text in texts] for i, texts in enumerate(references)}
    res = {i: [clean_caption(text)] for i, text in enumerate(hypotheses)}
    if any(not texts for texts in gts.values()):
        raise ValueError("every image needs at least one reference caption")
    corpus: Dict[str, Optional[float]] = {}
    per_image: List[Dict[str, Optional[float]]] = [{} for _ in hypotheses]
    unavailable: Dict[str, str] = {}

    def record(name, total, values):
        corpus[name] = None if total is None else float(total)
        for scores, value in zip(per_image, values if values is not None else [None] * len(per_image)):
            scores[name] = None if value is None else float(value)

    if any(name.startswith("BLEU") for name in metrics):
        totals, values = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            if f"BLEU-{n + 1}" in metrics:
                record(f"BLEU-{n + 1}", totals[n], values[n])
    if "METEOR" in metrics:
        total, values, reason = _meteor(gts, res)
        record("METEOR", total, values)
        if reason:
            unavailable["METEOR"] = reason
    if "ROUGE-L" in metrics:
        record("ROUGE-L", *Rouge().compute_score(gts, res))
    if "CIDEr-D" in metrics:
        record("CIDEr-D", *Cider().compute_score(gts, res))
    return CocoScores(corpus, per_image, unavailable)


def format_score(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"
