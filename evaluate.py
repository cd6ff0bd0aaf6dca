"""Stage 4: score captions of a split with the COCO caption metrics and NLTK BLEU.

    python evaluate.py --split dev                       # the run's captions, beam 3
    python evaluate.py --split dev --beam_size 1 --report
    python evaluate.py --split test --captions other_system.json --data_dir data/flickr8k
    python evaluate.py --split dev --run_dir runs/a runs/b runs/c   # an ensemble of three runs

A run: captions every image of the split that has stored features (images missing on disk or
unreadable are counted and reported) and writes `evaluation_<split>[_beam<K>][...].json` into the run
folder (an ensemble's into its first run's folder). Beside the scores: how many different captions
the split got, how many repeat a phrase, and how many end on a word like "a" or "with".
`--captions FILE.json` ({image name: caption}, from any system) scores that file instead, against
the split's references read from the dataset's caption files; no images are needed.
Both print the caption-prior baseline beside the scores.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List

from config import DECODING_FLAGS, Config, parse_config, quiet_tensorflow, resolved_config, run_script

quiet_tensorflow()

from data_loader import load_dataset  # noqa: E402
from inputs.json_files import read_json, write_json  # noqa: E402
from inputs.run_folder import CAPTIONS, evaluation_file  # noqa: E402
from scoring.metrics import COCO_METRICS, COCO_PROTOCOL, PROTOCOL, bleu_scores, coco_scores, format_score  # noqa: E402
from scoring.metrics import caption_statistics, most_common_caption  # noqa: E402
from scoring.report import write_report  # noqa: E402

EVALUATE_FLAGS = ("data_dir", "captions_file", "run_dir", "weights", "split", "captions", "report",
                  "split_seed") + DECODING_FLAGS


def read_caption_file(path: str) -> Dict[str, str]:
    """{image name: caption} from a JSON object; predict.py's --output file ({"captions": {path: caption}}) also works."""
    content = read_json(path, hint="")
    if isinstance(content, dict) and isinstance(content.get("captions"), dict):
        content = content["captions"]
    if not isinstance(content, dict) or not all(isinstance(v, str) for v in content.values()):
        raise ValueError(f"{path}: expected a JSON object mapping image name to caption text")
    return {os.path.basename(name): caption for name, caption in content.items()}


def stored_split_features(config: Config, captioner):
    """The split's references and the features preprocess stored in the run folder: (references, split
    images, missing images, images with features, their features, image folder)."""
    from inputs.feature_store import open_features

    references = read_json(os.path.join(captioner.run_dir, CAPTIONS))
    features, image_rows = open_features(captioner.run_dir, captioner.metadata)
    split_images = list(references[config.split])
    missing = [name for name in split_images if name not in image_rows]
    reasons = {name: kind for kind, names in captioner.metadata["skipped_images"].items() for name in names}
    report_missing(config.split, split_images, missing, reasons)
    scored = [name for name in split_images if name in image_rows]
    return references, missing, scored, features[[image_rows[name] for name in scored]], \
        captioner.metadata.get("image_dir", "")


def encoded_split_features(config: Config, captioner):
    """A run without stored features (the pretrained package): the split's references come from
    --data_dir and its images are encoded here. Returns what stored_split_features returns."""
    dataset = load_dataset(config.data_dir, config.split_seed, captions_file=config.captions_file)
    references = {split: {name: dataset.captions[name] for name in names} for split, names in dataset.splits.items()}
    split_images = list(references[config.split])
    paths = [dataset.image_path(name) for name in split_images]
    name_of = dict(zip(paths, split_images))
    kept, features, errors = captioner.image_features(paths)
    generated_names = {name_of[path] for path in kept}
    missing = [name for name in split_images if name not in generated_names]
    reasons = {name_of.get(str(error).split(f": {error.kind}")[0], ""): error.kind for error in errors}
    report_missing(config.split, split_images, missing, reasons)
    return references, missing, [name_of[path] for path in kept], features, dataset.image_dir


def report_missing(split: str, split_images: List[str], missing: List[str], reasons: Dict[str, str]) -> None:
    by_reason: dict = {}
    for name in missing:
        by_reason.setdefault(reasons.get(name, "not extracted (run preprocess.py again)"), []).append(name)
    for reason, names in by_reason.items():
        print(f"missing {len(names)} of {len(split_images)} {split} images: {reason} (e.g. {names[0]})",
              file=sys.stderr)


def captions_file_captions(config: Config):
    """--captions FILE: the file's captions of the split, and the split's references from the dataset."""
    dataset = load_dataset(config.data_dir, config.split_seed, need_images=False, captions_file=config.captions_file)
    references = {split: {name: dataset.captions[name] for name in names} for split, names in dataset.splits.items()}
    generated_all = read_caption_file(config.captions)
    split_images = list(references[config.split])
    generated = {name: generated_all[name] for name in split_images if name in generated_all}
    missing = [name for name in split_images if name not in generated_all]
    report_missing(config.split, split_images, missing, {name: "no caption in the file" for name in missing})
    outside = len(set(generated_all) - set(split_images))
    if outside:
        print(f"ignored {outside} captions of images outside the {config.split} split", file=sys.stderr)
    return references, missing, generated, dataset.image_dir


def model_captions(config: Config):
    """The run's (or ensemble's, or package's) captions of the split, and where its results are written."""
    from serving.captioner import Captioner
    from serving.encoder_check import check_encoder, warn_if_untrained

    captioner = Captioner.from_config(config)
    run_dir = captioner.run_dir
    print(f"run {run_dir}: {captioner.describe()}; decoding: {captioner.decoding()}")
    warn_if_untrained(captioner)
    agreement = None
    if "feature_store" in captioner.metadata and os.path.exists(os.path.join(run_dir, CAPTIONS)):
        references, missing, names, features, image_dir = stored_split_features(config, captioner)
    else:
        agreement = check_encoder(captioner)
        references, missing, names, features, image_dir = encoded_split_features(config, captioner)
    captions, guidance = captioner.captions_and_guidance(features, config.decode_batch_size) if names else ([], None)
    generated = dict(zip(names, captions))
    source = {"run_dir": run_dir, "ensemble": captioner.run_dirs if len(captioner.run_dirs) > 1 else [],
              "decoders": len(captioner.models),
              "model_file": config.model_file, "decoder": captioner.decoder_name,
              "encoder": captioner.metadata["encoder"],
              "weights": captioner.weights, "encoder_agreement": agreement, "decoding": captioner.decoding()}
    if guidance is not None:
        guided = {name: entry.as_dict() for name, entry in zip(names, guidance) if entry.guided}
        print(f"guided {len(guided)} of {len(names)} captions by their ImageNet tags "
              f"({captioner.policy.settings.describe()})")
        source["guided_images"] = guided
    decoding = dict(beam_size=config.beam_size, length_penalty=config.length_penalty,
                    no_repeat_ngram_size=config.no_repeat_ngram_size, block_bad_endings=config.block_bad_endings,
                    model_file=config.model_file, ensemble_size=len(captioner.models),
                    ensemble_mean=captioner.ensemble_mean,
                    guidance=captioner.policy.settings if captioner.policy is not None else None)
    return references, missing, generated, image_dir, source, evaluation_file(run_dir, config.split, **decoding), \
        evaluation_file(run_dir, config.split, **decoding, kind="report")


def model_label(beam_size: int, guided: bool) -> str:
    """The scores' row label: how the captions were decoded. Guided captions come from a constrained search
    at least GUIDED_BEAM wide, whatever --beam_size, so a guided run says so."""
    from tagging.guidance import GUIDED_BEAM

    plain = "greedy" if beam_size == 1 else f"beam {beam_size}"
    return f"model ({plain}; guided: beam {max(beam_size, GUIDED_BEAM)})" if guided else f"model ({plain})"


def evaluate(config: Config) -> dict:
    """Scores the captions of a split (the run's, or a captions file's); the evaluation file's content."""
    if config.captions:
        references, missing, generated, image_dir = captions_file_captions(config)
        source = {"captions_file": os.path.abspath(config.captions)}
        stem = os.path.splitext(config.captions)[0]
        output, report_base = f"{stem}.scores_{config.split}.json", f"{stem}.report_{config.split}"
    else:
        references, missing, generated, image_dir, source, output, report_base = model_captions(config)
    if not generated:
        raise ValueError(f"no {config.split} image has a caption to score")
    label = "captions file" if config.captions else model_label(config.beam_size, "guided_images" in source)
    result = score_captions(config, references, generated, missing, label)
    result = {"split": config.split, **source, "config": resolved_config(config, source.get("run_dir", config.run_dir)),
              **result}
    write_json(output, result)
    print(f"wrote {output}")
    if config.report:
        entries = [{"name": name, "image_path": os.path.join(image_dir, name) if image_dir else "",
                    "generated": entry["generated"], "references": entry["references"], "scores": entry["scores"]}
                   for name, entry in result["captions"].items()]
        write_report(entries, report_base + ".html", report_base + ".png",
                     f"{config.split} split, {label}", "CIDEr-D")
        print(f"wrote {report_base}.html and {report_base}.png")
    return result


def score_captions(config: Config, references: dict, generated: Dict[str, str], missing: List[str],
                   label: str) -> dict:
    """All the metrics of the generated captions against the split's references, printed as a table;
    the evaluation record (scores, the caption prior's, caption statistics, every caption)."""
    names = list(generated)
    split_references = [references[config.split][name] for name in names]
    hypotheses = [generated[name] for name in names]
    scores = coco_scores(split_references, hypotheses)
    nltk_scores = bleu_scores(split_references, hypotheses)
    prior = most_common_caption([c for captions in references["train"].values() for c in captions])
    prior_scores = coco_scores(split_references, [prior] * len(names))

    print(f"COCO metrics: {COCO_PROTOCOL}")
    print(f"NLTK BLEU: {PROTOCOL}")
    print(f"{config.split}: {len(names)} images scored, {len(missing)} missing")
    width = max(24, len(label) + 1)  # the first column: the longest row label
    print(" " * width + "".join(f"{name:>9s}" for name in COCO_METRICS))
    print(f"{label:{width}s}" + "".join(f"{format_score(scores.corpus[name]):>9s}" for name in COCO_METRICS))
    print(f"{'caption prior':{width}s}" + "".join(f"{format_score(prior_scores.corpus[name]):>9s}"
                                                  for name in COCO_METRICS))
    print(f"{'NLTK BLEU, same captions':{width}s}" + "".join(f"{value:9.4f}" for value in nltk_scores.values()))
    for metric, reason in scores.unavailable.items():
        print(f"{metric} unavailable: {reason}")
    print(f"(caption prior: every image gets the most common training caption, {prior!r})")
    statistics = caption_statistics(hypotheses)
    print(f"{statistics['distinct']} different captions for {len(names)} images; {statistics['repeated_phrase']} "
          f"repeat a phrase of 3 words or more; {statistics['bad_ending']} end on a word like 'a' or 'with'; "
          f"most frequent: {statistics['most_frequent']!r} ({statistics['most_frequent_count']}x)")
    return {
        "coco_protocol": COCO_PROTOCOL, "nltk_protocol": PROTOCOL,
        "images_scored": len(names), "images_missing": len(missing), "scores": scores.corpus,
        "caption_statistics": statistics,
        "unavailable": scores.unavailable, "nltk_bleu": nltk_scores,
        "caption_prior": {"caption": prior, "scores": prior_scores.corpus},
        "captions": {name: {"generated": caption, "references": refs, "scores": per_image}
                     for name, caption, refs, per_image in zip(names, hypotheses, split_references, scores.per_image)},
        "missing_images": missing,
    }


def main(argv: list[str] | None = None) -> int:
    evaluate(parse_config(EVALUATE_FLAGS, __doc__.splitlines()[0], argv, several=("run_dir",), beam_size=3))
    return 0


if __name__ == "__main__":
    run_script(main)
