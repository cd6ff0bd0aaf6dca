"""Captions of photos from outside Flickr8k, unguided and guided, and the README's picture of them
(`benchmarks/guided_decoding.py --photos DIR [--picture OUT.jpg]`)."""
from __future__ import annotations

import os
import textwrap
from typing import List

import numpy as np


def photos(captioner, folder: str, picture: str) -> None:
    """Prints each photo's tags and its caption before and after guidance; draws them into `picture`."""
    from inputs.images import IMAGE_SUFFIXES

    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.lower().endswith(IMAGE_SUFFIXES))
    kept, features, errors = captioner.image_features(paths)
    for error in errors:
        print(f"skipped {error}")
    policy, captioner.policy = captioner.policy, None
    before = captioner.caption_features(features)
    captioner.policy = policy
    after, guidance = captioner.captions_and_guidance(features)
    print(f"\n## photos from outside Flickr8k ({folder}), beam {captioner.beam_size}")
    rows = []
    for path, old, new, entry in zip(kept, before, after, guidance):
        asked = ", ".join(f"{words} ({probability:.2f})" for words, probability in entry.constraints)
        print(f"  {os.path.basename(path)}: {entry.describe()}\n    asked: {asked or 'nothing'}"
              f"\n    unguided: {old}\n    guided:   {new}")
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
