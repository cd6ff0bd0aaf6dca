"""Guided decoding measured on the Flickr8k dev split: how often captions name the objects Flickr8k's
captioner rarely writes, how often a guided word is wrong, and the seven COCO metrics, guided and
unguided; a sweep of the policy's settings; the speed; and captions of photos from outside Flickr8k.

    python benchmarks/guided_decoding.py --run_dir RUN --data_dir ../shared/data/flickr8k [--weights W]
        [--beam_size 3] [--guide_threshold F --guide_constraints K --guide_margin M --guide_sure S]   # one table
    python benchmarks/guided_decoding.py --run_dir RUN --data_dir DATA --sweep --table sweep.md   # the grid
        [--floors 0.15 0.2 ... --constraints 1 2 3 --sures 0.8 0.9 2 --margins 0 0.25 ... 1e9]   # 2: never sure; 1e9: no margin
    python benchmarks/guided_decoding.py --run_dir RUN --data_dir DATA --speed
    python benchmarks/guided_decoding.py --run_dir RUN --data_dir DATA --photos DIR [--picture OUT.jpg]

RUN: a run folder with stored features (no encoding), or the pretrained package (its dev images are
encoded; give --weights offline). Objects: the dev images where at least two of the five references use
a word of one of OBJECT_GROUPS (cat, bird, horse...), and whether the caption uses one. Wrong guided
words: of the words a guided caption was asked for and says, those in none of the image's references.
The sweep runs the constrained search once per floor, k and sure, and applies each margin to its results
(the policy's own rules, TagPolicy.margins and accepts); it scores CIDEr-D only, the table all seven metrics.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from typing import Dict, List, Sequence

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)

from config import PRETRAINED_DIR, Config, quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import numpy as np  # noqa: E402

from inputs.run_folder import CAPTIONS  # noqa: E402
from scoring.metrics import COCO_METRICS, coco_scores  # noqa: E402
from serving.captioner import Captioner  # noqa: E402
from tagging.guidance import guide  # noqa: E402
from tagging.policy import PolicySettings  # noqa: E402

# Objects the captioner rarely writes: a dev image is in a group when two of its references use its words.
OBJECT_GROUPS = {
    "cat": {"cat", "cats", "kitten"}, "bird": {"bird", "birds", "duck", "ducks", "swan", "swans", "seagull",
                                                "seagulls", "pelican", "chicken", "chickens"},
    "horse": {"horse", "horses", "pony"}, "cow or sheep": {"cow", "cows", "bull", "bulls", "sheep", "goat", "goats"},
    "boat": {"boat", "boats", "canoe", "canoes", "kayak", "kayaks", "sailboat", "raft"},
    "food": {"food", "pizza", "cake", "bread", "fruit", "meal", "sandwich"},
    "bench or couch": {"bench", "benches", "couch", "sofa"}, "car or truck": {"car", "cars", "truck", "trucks"},
    "instrument": {"guitar", "guitars", "drum", "drums", "piano", "violin"},
}
SWEEP = {"floors": (0.15, 0.2, 0.25, 0.3, 0.4, 0.5), "constraints": (1, 2, 3), "sures": (0.7, 0.8, 0.9, 2.0),
         "margins": (0.0, 0.25, 0.5, 1.0, 1e9)}


def object_images(references: List[List[str]]) -> List[tuple]:
    """(dev image index, group) for each image where two or more references name a group's object."""
    found = []
    for index, texts in enumerate(references):
        for group, words in OBJECT_GROUPS.items():
            if sum(bool(set(text.split()) & words) for text in texts) >= 2:
                found.append((index, group))
                break
    return found


def objects_named(references: List[List[str]], captions: Sequence[str]) -> Dict[str, List[int]]:
    """group -> [images, images whose caption names the object]; 'all' totals them."""
    counts = {group: [0, 0] for group in list(OBJECT_GROUPS) + ["all"]}
    for index, group in object_images(references):
        named = int(bool(set(captions[index].split()) & OBJECT_GROUPS[group]))
        for key in (group, "all"):
            counts[key][0] += 1
            counts[key][1] += named
    return counts


def guided_words(policy, vocabulary, caption: str, units: Sequence[int]) -> List[set]:
    """For each constraint unit the caption names: the unit's words and phrases (its vocabulary's forms)."""
    padded, said = f" {caption} ", []
    for unit in (policy.units[index] for index in units):
        forms = {vocabulary.tokens[word] for word in unit.words}
        forms |= {f"{vocabulary.tokens[unit.phrase_first]} {vocabulary.tokens[second]}" for second in unit.phrase_second}
        if any(f" {form} " in padded for form in forms):
            said.append(forms)
    return said


def wrong_words(policy, vocabulary, references, captions, guidance) -> List[int]:
    """[guided words said, of them in none of the image's references]."""
    counts = [0, 0]
    for texts, caption, entry in zip(references, captions, guidance):
        if entry.guided:
            for forms in guided_words(policy, vocabulary, caption, entry.units):
                counts[0] += 1
                counts[1] += not any(f" {form} " in f" {text} " for form in forms for text in texts)
    return counts


class DevSplit:
    """The run's dev features and references, and its plain captions (token ids) at one beam width."""

    def __init__(self, captioner: Captioner, data_dir: str, beam_size: int):
        from evaluate import encoded_split_features, stored_split_features

        config = Config(run_dir=captioner.run_dir, data_dir=data_dir, split="dev")
        stored = "feature_store" in captioner.metadata and os.path.exists(os.path.join(captioner.run_dir, CAPTIONS))
        references, _, names, self.features, _ = (stored_split_features if stored else encoded_split_features)(
            config, captioner)
        self.references = [references["dev"][name] for name in names]
        self.captioner, self.beam_size = captioner, beam_size
        self.plain = captioner.decoder.best_token_ids(self.features, beam_size, captioner.length_penalty)

    def guided(self, settings: PolicySettings):
        captioner = self.captioner
        return guide(captioner.policy, captioner.search, self.features, self.plain, self.beam_size,
                     captioner.length_penalty, 32, settings)

    def per_token(self, token_rows) -> np.ndarray:
        from tagging.guidance import padded

        scores, lengths = self.captioner.decoder.score_in_graph(self.features, padded(token_rows))
        return scores.numpy() / np.maximum(lengths.numpy(), 1)

    def captions(self, token_rows) -> List[str]:
        return [self.captioner.vocabulary.decode(row) for row in token_rows]


def measure(dev: DevSplit, captions: List[str], guidance, metrics=COCO_METRICS) -> Dict[str, object]:
    scores = coco_scores(dev.references, captions, metrics).corpus
    named = objects_named(dev.references, captions)["all"]
    said, wrong = wrong_words(dev.captioner.policy, dev.captioner.vocabulary, dev.references, captions,
                              guidance) if guidance else (0, 0)
    return {**scores, "guided": sum(entry.guided for entry in guidance or []), "named": named[1],
            "objects": named[0], "said": said, "wrong": wrong}


def table(dev: DevSplit, settings: PolicySettings) -> None:
    plain = dev.captions(dev.plain)
    tokens, guidance = dev.guided(settings)
    guided = dev.captions(tokens)
    for entry, caption in zip(guidance, guided):
        entry.caption = caption
    rows = [("unguided", measure(dev, plain, None)), (f"guided ({settings.describe()})", measure(dev, guided, guidance))]
    print(f"\n## {dev.captioner.run_dir}, beam {dev.beam_size}, {len(plain)} dev images")
    print("| decoding | " + " | ".join(COCO_METRICS) + " | guided captions | objects named | guided words in no reference |")
    print("| --- " * (len(COCO_METRICS) + 4) + "|")
    for label, row in rows:
        wrong = f"{row['wrong']} of {row['said']}" if row["said"] else ""
        print(f"| {label} | " + " | ".join(f"{row[name]:.4f}" for name in COCO_METRICS) +
              f" | {row['guided'] or ''} | {row['named']} of {row['objects']} | {wrong} |")
    print("\n## objects by group: images, named unguided, named guided")
    before, after = objects_named(dev.references, plain), objects_named(dev.references, guided)
    for group in before:
        print(f"  {group:16s}{before[group][0]:>6d}{before[group][1]:>6d}{after[group][1]:>6d}")


def sweep(dev: DevSplit, path: str, grid: Dict[str, Sequence[float]]) -> None:
    """Every floor x k x sure x margin of `grid`: CIDEr-D, objects named, guided captions, wrong guided words."""
    plain_captions, plain_per_token = dev.captions(dev.plain), dev.per_token(dev.plain)
    baseline = measure(dev, plain_captions, None, ("CIDEr-D",))
    lines = [f"unguided, beam {dev.beam_size}: CIDEr-D {baseline['CIDEr-D']:.4f}, objects named {baseline['named']} "
             f"of {baseline['objects']}", "", "| floor | k | sure | margin | CIDEr-D | objects named | guided captions | "
             "guided words in no reference |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    policy = dev.captioner.policy
    for floor, k, sure in itertools.product(grid["floors"], grid["constraints"], grid["sures"]):
        tokens, guidance = dev.guided(PolicySettings(floor, int(k), max(grid["margins"]), sure))
        guided_per_token = dev.per_token(tokens)
        for margin in grid["margins"]:
            margins = policy.margins(np.array([entry.sure for entry in guidance]), margin).numpy()
            kept = [entry.guided and bool(policy.accepts(True, g, 1, p, 1, row_margin))
                    for entry, g, p, row_margin in zip(guidance, guided_per_token, plain_per_token, margins)]
            rows = [row if keep else plain for row, plain, keep in zip(tokens, dev.plain, kept)]
            entries = [type(entry)(entry.tags, entry.constraints, keep, units=entry.units)
                       for entry, keep in zip(guidance, kept)]
            row = measure(dev, dev.captions(rows), entries, ("CIDEr-D",))
            lines.append(f"| {floor:g} | {int(k)} | {'never' if sure > 1 else f'{sure:g}'} | "
                         f"{'none' if margin >= 1e9 else f'{margin:g}'} | {row['CIDEr-D']:.4f} | "
                         f"{row['named']} | {row['guided']} | {row['wrong']} of {row['said']} |")
            print(lines[-1], flush=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


def speed(dev: DevSplit) -> None:
    captioner = dev.captioner

    def plain():
        return captioner.decoder.best_token_ids(dev.features, dev.beam_size, captioner.length_penalty)

    def guided():  # the plain captions first, as captions_and_guidance does
        return guide(captioner.policy, captioner.search, dev.features, plain(), dev.beam_size,
                     captioner.length_penalty)

    plain(), guided()  # tracing
    seconds = {"plain": [], "guided": []}
    for _ in range(3):
        for kind, work in (("plain", plain), ("guided", guided)):
            started = time.perf_counter()
            work()
            seconds[kind].append(time.perf_counter() - started)
    print(f"\n## beam {dev.beam_size} on {len(dev.plain)} dev images' features, best of 3 alternating passes")
    for kind in seconds:
        print(f"  {kind:8s} {min(seconds[kind]):6.2f} s  {len(dev.plain) / min(seconds[kind]):7.1f} images/s   "
              f"(passes: {', '.join(f'{value:.2f}' for value in seconds[kind])} s)")
    print(f"  guided captions: {sum(entry.guided for entry in guided()[1])} of {len(dev.plain)}")


def main() -> None:
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--run_dir", default=PRETRAINED_DIR)
    parser.add_argument("--weights", default="", help="the encoder's weights, for a run without stored features")
    parser.add_argument("--beam_size", type=int, default=3)
    parser.add_argument("--guide_threshold", type=float, default=defaults.guide_threshold)
    parser.add_argument("--guide_constraints", type=int, default=defaults.guide_constraints)
    parser.add_argument("--guide_margin", type=float, default=defaults.guide_margin)
    parser.add_argument("--guide_sure", type=float, default=defaults.guide_sure)
    parser.add_argument("--sweep", action="store_true", help="the grid of floors, k, sures and margins")
    parser.add_argument("--table", default="guided_sweep.md", help="--sweep: where its table goes")
    for name, values in SWEEP.items():
        parser.add_argument(f"--{name}", type=float, nargs="+", default=values, help=f"--sweep: the {name} tried")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--photos", default="", help="a folder of photos from outside Flickr8k")
    parser.add_argument("--picture", default="", help="--photos: also draw them with their captions here")
    args = parser.parse_args()
    print(f"# load average {os.getloadavg()[0]:.2f} at the start (2 CPUs)")
    captioner = Captioner(args.run_dir, beam_size=args.beam_size, weights=args.weights)
    settings = PolicySettings(args.guide_threshold, args.guide_constraints, args.guide_margin, args.guide_sure)
    note = captioner.guide_by_tags(settings)
    if note:
        raise SystemExit(note)
    if args.photos:
        from guided_photos import photos

        return photos(captioner, args.photos, args.picture)
    dev = DevSplit(captioner, args.data_dir, args.beam_size)
    if args.sweep:
        return sweep(dev, args.table, {name: getattr(args, name) for name in SWEEP})
    if args.speed:
        return speed(dev)
    table(dev, settings)


if __name__ == "__main__":
    main()
