"""Guided decoding measured: speed against plain beam search, and how often captions name the objects
Flickr8k's captioner rarely writes; optionally captions of photos from outside Flickr8k and the README's
picture of them.

    python benchmarks/guided_decoding.py --data_dir ../shared/data/flickr8k --weights W [--photos DIR]
        [--picture docs/guided_examples.jpg]

The captioner is the pretrained package (or --run_dir); the dev images are encoded once. Speed: beam 3
with and without guidance on the 1,000 dev images, alternating, best of three passes each. Objects: the
dev images where at least two of the five references use a word of one of the groups below (cat, bird,
horse...), and whether the caption uses one, before and after guidance (beam 3).
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from typing import List

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)

from config import PRETRAINED_DIR, quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import numpy as np  # noqa: E402

from data_loader import load_dataset  # noqa: E402
from serving.captioner import Captioner  # noqa: E402

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


def object_images(references: List[List[str]]) -> List[tuple]:
    """(dev image index, group) for each image where two or more references name a group's object."""
    found = []
    for index, texts in enumerate(references):
        for group, words in OBJECT_GROUPS.items():
            if sum(bool(set(text.split()) & words) for text in texts) >= 2:
                found.append((index, group))
                break
    return found


def best_of(passes: int, work) -> float:
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--run_dir", default=PRETRAINED_DIR)
    parser.add_argument("--photos", default="", help="a folder of photos from outside Flickr8k")
    parser.add_argument("--picture", default="", help="write the README's picture here (needs --photos)")
    args = parser.parse_args()
    print(f"# load average {os.getloadavg()[0]:.2f} at the start (2 CPUs)")
    captioner = Captioner(args.run_dir, beam_size=3, weights=args.weights)
    note = captioner.guide_by_tags(captioner_threshold())
    if note:
        raise SystemExit(note)
    dataset = load_dataset(args.data_dir)
    names = dataset.splits["dev"]
    kept, features, errors = captioner.image_features([dataset.image_path(name) for name in names])
    if errors:
        raise SystemExit(f"{len(errors)} dev images unreadable, e.g. {errors[0]}")
    references = [dataset.captions[name] for name in names]
    tagger, search = captioner.tagger, captioner.search

    def plain():
        captioner.tagger = None
        try:
            return captioner.captions_and_guidance(features)[0]
        finally:
            captioner.tagger = tagger

    def guided():
        return captioner.captions_and_guidance(features)

    plain(), guided()  # tracing
    seconds = {"plain": [], "guided": []}
    for _ in range(3):
        seconds["plain"].append(best_of(1, plain))
        seconds["guided"].append(best_of(1, guided))
    unguided, (captions, guidance) = plain(), guided()
    print(f"\n## beam 3 on {len(names)} Flickr8k dev images (features computed before), best of 3 alternating passes")
    for kind in ("plain", "guided"):
        print(f"  {kind:8s} {min(seconds[kind]):6.2f} s  {len(names) / min(seconds[kind]):7.1f} images/s   "
              f"(passes: {', '.join(f'{value:.2f}' for value in seconds[kind])} s)")
    print(f"  guided captions: {sum(entry.guided for entry in guidance)} of {len(names)}; "
          f"{(min(seconds['guided']) / min(seconds['plain']) - 1) * 100:.0f}% more time than plain beam 3")
    report_objects(references, unguided, captions)
    if args.photos:
        photos(captioner, args.photos, args.picture, search)


def captioner_threshold() -> float:
    from config import Config

    return Config().guide_threshold


def report_objects(references: List[List[str]], before: List[str], after: List[str]) -> None:
    chosen = object_images(references)
    print("\n## dev images whose references name an object (two of five or more): does the caption name it?")
    print(f"  {'object':16s}{'images':>8s}{'unguided':>10s}{'guided':>8s}")
    totals = [0, 0, 0]
    for group in OBJECT_GROUPS:
        indices = [index for index, name in chosen if name == group]
        counts = [len(indices)] + [sum(bool(set(captions[i].split()) & OBJECT_GROUPS[group]) for i in indices)
                                   for captions in (before, after)]
        totals = [total + count for total, count in zip(totals, counts)]
        print(f"  {group:16s}{counts[0]:>8d}{counts[1]:>10d}{counts[2]:>8d}")
    print(f"  {'all':16s}{totals[0]:>8d}{totals[1]:>10d}{totals[2]:>8d}")


def photos(captioner: Captioner, folder: str, picture: str, search) -> None:
    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    kept, features, errors = captioner.image_features(paths)
    tagger = captioner.tagger
    captioner.tagger = None
    before = captioner.caption_features(features)
    captioner.tagger = tagger
    after, guidance = captioner.captions_and_guidance(features)
    print(f"\n## photos from outside Flickr8k ({folder}), beam 3")
    rows = []
    for path, old, new, entry in zip(kept, before, after, guidance):
        print(f"  {os.path.basename(path)}: {entry.describe()}\n    unguided: {old}\n    guided:   {new}")
        rows.append((path, entry, old, new))
    if picture:
        draw_picture(rows, picture)
        print(f"wrote {picture}")


def draw_picture(rows: List[tuple], path: str) -> None:
    """One row per photo: the photo, its three tags, the caption before and after guidance."""
    from PIL import Image, ImageDraw, ImageFont

    from inputs.images import load_image

    size, width = 160, 880
    sheet = Image.new("RGB", (width, size * len(rows) + 10 * (len(rows) + 1)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=15)
    bold = ImageFont.load_default(size=17)
    for row, (photo, entry, old, new) in enumerate(rows):
        top = 10 + row * (size + 10)
        sheet.paste(Image.fromarray(load_image(photo, size)[0].astype(np.uint8)), (10, top))
        tags = ", ".join(f"{label} {probability:.2f}" for label, probability in entry.tags)
        lines = [("tags: " + tags, font, "dimgray"), ("before: " + old, font, "black"),
                 ("after: " + new, bold, "darkgreen" if entry.guided else "black")]
        y = top + 8
        for text, face, colour in lines:
            for part in textwrap.wrap(text, 72):
                draw.text((size + 30, y), part, fill=colour, font=face)
                y += 24
            y += 10
    sheet.save(path, quality=88)


if __name__ == "__main__":
    main()
