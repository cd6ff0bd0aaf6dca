"""Stage 4: score a trained run on a split with BLEU-1..4 under a stated protocol.

    python evaluate.py --split test

Captions every image of the split that has stored features (images missing on disk or unreadable
are counted and reported), scores them against all references, and writes
`evaluation_<split>.json` (`evaluation_<split>_beam<K>.json` for beam search: captions and
scores) into the run folder.
"""
from __future__ import annotations

import json
import os
import sys

from config import Config, parse_config, quiet_tensorflow, run_script

quiet_tensorflow()

from captioner import Captioner, warn_if_untrained  # noqa: E402
from feature_store import open_features  # noqa: E402
from metrics import PROTOCOL, bleu_scores, most_common_caption  # noqa: E402
from preprocess import write_json  # noqa: E402

EVALUATE_FLAGS = ("data_dir", "run_dir", "split", "max_decode_length", "decode_batch_size", "beam_size",
                  "length_penalty")


def evaluate(config: Config) -> dict:
    run_dir = config.resolved_run_dir()
    captioner = Captioner(run_dir, config.max_decode_length, config.beam_size, config.length_penalty)
    print(f"run {run_dir}: {captioner.describe()}; decoding: {captioner.decoding()}")
    warn_if_untrained(captioner)
    with open(os.path.join(run_dir, "captions.json"), encoding="utf-8") as handle:
        references = json.load(handle)
    features, image_rows = open_features(run_dir, captioner.metadata)
    split_images = list(references[config.split])
    scored = [name for name in split_images if name in image_rows]
    missing = [name for name in split_images if name not in image_rows]
    if missing:
        reasons = {name: kind for kind, names in captioner.metadata["skipped_images"].items() for name in names}
        by_reason: dict = {}
        for name in missing:
            by_reason.setdefault(reasons.get(name, "not extracted (run preprocess.py again)"), []).append(name)
        for reason, names in by_reason.items():
            print(f"missing {len(names)} of {len(split_images)} {config.split} images: {reason} (e.g. {names[0]})",
                  file=sys.stderr)
    if not scored:
        raise ValueError(f"no {config.split} image of {run_dir} has features: nothing to score")

    generated = captioner.caption_features(features[[image_rows[name] for name in scored]], config.decode_batch_size)
    split_references = [references[config.split][name] for name in scored]
    scores = bleu_scores(split_references, generated)
    prior = most_common_caption([c for captions in references["train"].values() for c in captions])
    baseline = bleu_scores(split_references, [prior] * len(scored))

    print(f"protocol: {PROTOCOL}")
    print(f"{config.split}: {len(scored)} images scored, {len(missing)} missing")
    print(f"{'':22s}" + "".join(f"{name:>9s}" for name in scores))
    label = "model (greedy)" if config.beam_size == 1 else f"model (beam {config.beam_size})"
    print(f"{label:22s}" + "".join(f"{value:9.4f}" for value in scores.values()))
    print(f"{'caption prior':22s}" + "".join(f"{value:9.4f}" for value in baseline.values()))
    print(f"(caption prior: every image gets the most common training caption, {prior!r})")
    result = {
        "split": config.split, "run_dir": run_dir, "encoder": captioner.metadata["encoder"],
        "weights": captioner.metadata["weights"], "decoding": captioner.decoding(), "protocol": PROTOCOL,
        "images_scored": len(scored), "images_missing": len(missing), "scores": scores,
        "caption_prior": {"caption": prior, "scores": baseline},
        "captions": {name: {"generated": caption, "references": refs}
                     for name, caption, refs in zip(scored, generated, split_references)},
        "missing_images": missing,
    }
    suffix = "" if config.beam_size == 1 else f"_beam{config.beam_size}"
    path = os.path.join(run_dir, f"evaluation_{config.split}{suffix}.json")
    write_json(path, result)
    print(f"wrote {path}")
    return result


def main(argv: list[str] | None = None) -> int:
    evaluate(parse_config(EVALUATE_FLAGS, __doc__.splitlines()[0], argv))
    return 0


if __name__ == "__main__":
    run_script(main)
