"""Writes the bundled sample dataset: simple scenes of coloured shapes, five captions each.

    python data/make_sample.py            # rewrites data/sample/ (deterministic: same files every time)

The output has the official Flickr8k layout, so the pipeline reads it exactly as it reads Flickr8k:
Flickr8k_text/Flickr8k.token.txt, Flickr8k_text/Flickr_8k.{train,dev,test}Images.txt, and
Flicker8k_Dataset/*.jpg.
"""
from __future__ import annotations

import argparse
import os
import random

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (240, 220, 20),
           "purple": (140, 40, 170), "orange": (250, 140, 10)}
BACKGROUNDS = {"white": (245, 245, 245), "grey": (128, 128, 128), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle")
SHAPE_WORDS = {"circle": ("circle", "ball", "round shape"), "square": ("square", "box", "block"),
               "triangle": ("triangle", "triangle", "pointed shape")}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "big": ("big", "large", "huge")}
SPLIT_SIZES = {"train": 280, "dev": 60, "test": 60}
IMAGE_SIZE = 96


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, centre: tuple, radius: int, colour: tuple) -> None:
    x, y = centre
    box = (x - radius, y - radius, x + radius, y + radius)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=colour)


def one_shape_scene(rng: random.Random) -> tuple[Image.Image, list[str]]:
    background = rng.choice(list(BACKGROUNDS))
    colour, shape, size = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(("small", "big"))
    place = rng.choice(("left", "right", "middle"))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[background])
    radius = 12 if size == "small" else 30
    x = {"left": 32, "right": 64, "middle": 48}[place] + rng.randint(-3, 3)
    draw_shape(ImageDraw.Draw(image), shape, (x, 48 + rng.randint(-6, 6)), radius, COLOURS[colour])
    word = rng.choice(SHAPE_WORDS[shape])
    size_word = rng.choice(SIZE_WORDS[size])
    where = "in the middle" if place == "middle" else f"on the {place}"
    captions = [
        f"a {size_word} {colour} {word} on a {background} background",
        f"a {colour} {shape} {where} of the picture",
        f"there is one {size} {colour} {shape}",
        f"{size_word} {colour} {word} {where}",
        f"a single {shape} coloured {colour} against {background}",
        f"A {colour} {shape} sits {where}.",
        f"{colour.capitalize()} {word} on {background}",
    ]
    return image, rng.sample(captions, 5)


def two_shape_scene(rng: random.Random) -> tuple[Image.Image, list[str]]:
    background = rng.choice(list(BACKGROUNDS))
    first_colour, second_colour = rng.sample(list(COLOURS), 2)
    first, second = rng.choice(SHAPES), rng.choice(SHAPES)
    vertical = rng.random() < 0.4
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    jitter = rng.randint(-4, 4)
    if vertical:  # first above second
        draw_shape(draw, first, (48 + jitter, 24), 14, COLOURS[first_colour])
        draw_shape(draw, second, (48 - jitter, 70), 14, COLOURS[second_colour])
        relation, inverse, pair = "above", "below", "one on top of the other"
    else:  # first left of second
        draw_shape(draw, first, (24, 48 + jitter), 14, COLOURS[first_colour])
        draw_shape(draw, second, (70, 48 - jitter), 14, COLOURS[second_colour])
        relation, inverse, pair = "to the left of", "to the right of", "side by side"
    a, b = f"{first_colour} {first}", f"{second_colour} {second}"
    captions = [
        f"a {a} {relation} a {b}",
        f"a {b} {inverse} a {a}",
        f"two shapes a {a} and a {b}",
        f"a {a} and a {b} {pair} on a {background} background",
        f"{first_colour} {rng.choice(SHAPE_WORDS[first])} {relation} {second_colour} {rng.choice(SHAPE_WORDS[second])}",
        f"Two shapes, {pair}: a {first_colour} one and a {second_colour} one.",
        f"the {a} is {relation} the {b}",
    ]
    return image, rng.sample(captions, 5)


def make_sample(out_dir: str, seed: int = 8, split_sizes: dict | None = None) -> None:
    rng = random.Random(seed)
    image_dir = os.path.join(out_dir, "Flicker8k_Dataset")
    text_dir = os.path.join(out_dir, "Flickr8k_text")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(text_dir, exist_ok=True)
    token_lines, split_names, number = [], {}, 0
    for split, count in (split_sizes or SPLIT_SIZES).items():
        split_names[split] = []
        for _ in range(count):
            scene = one_shape_scene if rng.random() < 0.5 else two_shape_scene
            image, captions = scene(rng)
            name = f"shapes_{number:04d}.jpg"
            number += 1
            image.save(os.path.join(image_dir, name), quality=90)
            split_names[split].append(name)
            token_lines += [f"{name}#{index}\t{caption}" for index, caption in enumerate(captions)]
    with open(os.path.join(text_dir, "Flickr8k.token.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(token_lines) + "\n")
    for split, names in split_names.items():
        with open(os.path.join(text_dir, f"Flickr_8k.{split}Images.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(names) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample"),
                        help="where to write the dataset")
    parser.add_argument("--seed", type=int, default=8, help="random seed of the scenes and captions")
    arguments = parser.parse_args()
    make_sample(arguments.out_dir, arguments.seed)
    print(f"wrote {arguments.out_dir}")
