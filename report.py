"""Pictures of a run, drawn with Pillow: training curves, and the evaluation report (HTML page and PNG grid).

Pillow is already needed to read images, so plots need no plotting library.
"""
from __future__ import annotations

import html
import os
import textwrap
from typing import Dict, List, Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

LINE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: one fixed size only
        return ImageFont.load_default()


def _panel(draw: ImageDraw.ImageDraw, box, title: str, series: Dict[str, List[tuple]], last_epoch: int) -> None:
    """One line chart inside `box` (left, top, right, bottom): x is the epoch, one line per series."""
    left, top, right, bottom = box
    font = _font(14)
    draw.text((left, top - 24), title, fill="black", font=_font(16))
    values = [y for points in series.values() for _, y in points]
    if not values:
        draw.text((left + 10, top + 10), "no values yet", fill="grey", font=font)
        return
    low, high = min(0.0, min(values)), max(values)
    high = high if high > low else low + 1.0
    draw.rectangle(box, outline="black")
    for tick in range(5):
        value = low + (high - low) * tick / 4
        y = bottom - (bottom - top) * tick / 4
        draw.line((left - 4, y, left, y), fill="black")
        draw.line((left, y, right, y), fill=(230, 230, 230))
        draw.text((left - 50, y - 8), f"{value:.3g}", fill="black", font=font)
    span = max(last_epoch - 1, 1)

    def x_of(epoch):
        return left + (right - left) * (epoch - 1) / span

    for epoch in range(1, last_epoch + 1, max(1, last_epoch // 10)):
        draw.text((x_of(epoch) - 4, bottom + 4), str(epoch), fill="black", font=font)
    draw.text(((left + right) / 2 - 20, bottom + 22), "epoch", fill="black", font=font)
    for index, (name, points) in enumerate(series.items()):
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]
        xy = [(x_of(epoch), bottom - (bottom - top) * (y - low) / (high - low)) for epoch, y in points]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((left + 10, top + 8 + 18 * index), name, fill=colour, font=font)


def plot_training_curves(history: Sequence[Dict[str, float]], path: str) -> None:
    """Loss (training and dev) and dev BLEU-4 / CIDEr-D by epoch, side by side, as a PNG."""
    image = Image.new("RGB", (1100, 440), "white")
    draw = ImageDraw.Draw(image)
    last_epoch = int(max((row["epoch"] for row in history), default=1))

    def series(*names):
        return {name: [(int(row["epoch"]), row[name]) for row in history if name in row] for name in names
                if any(name in row for row in history)}

    _panel(draw, (80, 50, 520, 380), "loss (per word)", series("loss", "val_loss"), last_epoch)
    _panel(draw, (630, 50, 1070, 380), "dev metrics (greedy captions)", series("dev_bleu4", "dev_cider"), last_epoch)
    temporary = path + ".tmp.png"
    image.save(temporary)
    os.replace(temporary, path)


def _tile(image_path: Optional[str], caption: str, references: List[str], scores: str, size: int = 224) -> Image.Image:
    tile = Image.new("RGB", (size, size + 170), "white")
    draw = ImageDraw.Draw(tile)
    try:
        with Image.open(image_path) as picture:
            picture = picture.convert("RGB")
            picture.thumbnail((size, size))
            tile.paste(picture, ((size - picture.width) // 2, 0))
    except (OSError, TypeError, ValueError):
        draw.rectangle((0, 0, size - 1, size - 1), outline="grey")
        draw.text((10, size // 2), "image not available", fill="grey", font=_font(14))
    y = size + 4
    for line in textwrap.wrap(caption, 34)[:3]:
        draw.text((4, y), line, fill="black", font=_font(14))
        y += 17
    draw.text((4, y), scores, fill=(31, 119, 180), font=_font(12))
    y += 16
    for reference in references[:3]:
        draw.text((4, y), textwrap.shorten("ref: " + reference, 44), fill="grey", font=_font(12))
        y += 15
    return tile


def write_report(entries: List[dict], html_path: str, png_path: str, title: str, sort_by: str,
                 grid_each: int = 8) -> None:
    """`entries`: dicts with name, image_path, generated, references, scores (metric -> value or None).

    The HTML page lists every image, best `sort_by` first; the PNG grid shows the best and the worst
    `grid_each` images.
    """
    ranked = sorted(entries, key=lambda entry: -(entry["scores"].get(sort_by) or 0.0))

    def score_text(entry):
        return "  ".join(f"{name} {value:.3f}" for name, value in entry["scores"].items() if value is not None)

    rows = []
    for rank, entry in enumerate(ranked, 1):
        source = html.escape(os.path.relpath(entry["image_path"], os.path.dirname(os.path.abspath(html_path)))
                             if entry["image_path"] else "")
        references = "".join(f"<li>{html.escape(text)}</li>" for text in entry["references"])
        rows.append(f"<tr><td>{rank}</td><td><img src=\"{source}\" alt=\"{html.escape(entry['name'])}\" "
                    f"width=\"224\"></td><td><b>{html.escape(entry['generated'])}</b><ul>{references}</ul></td>"
                    f"<td>{html.escape(score_text(entry))}</td></tr>")
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif}td{vertical-align:top;padding:6px;border-bottom:1px solid #ddd}"
            "li{color:#555}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{len(ranked)} images, best {html.escape(sort_by)} first.</p>"
            "<table><tr><th>#</th><th>image</th><th>generated (bold) and references</th><th>scores</th></tr>"
            + "".join(rows) + "</table></body></html>")
    with open(html_path, "w", encoding="utf-8") as handle:
        handle.write(page)

    shown = ranked[:grid_each] + ranked[-grid_each:] if len(ranked) > 2 * grid_each else ranked
    columns = min(4, max(1, len(shown)))
    tiles = [_tile(entry["image_path"], entry["generated"], entry["references"],
                   f"{sort_by} {entry['scores'].get(sort_by) or 0.0:.3f}") for entry in shown]
    width, height = tiles[0].size
    grid_rows = (len(tiles) + columns - 1) // columns
    grid = Image.new("RGB", (columns * width, grid_rows * height + 30), "white")
    ImageDraw.Draw(grid).text((6, 6), f"{title}: best {min(grid_each, len(ranked))} and worst by {sort_by}",
                              fill="black", font=_font(16))
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % columns) * width, 30 + (index // columns) * height))
    grid.save(png_path)


def attention_figure(image: Image.Image, words: Sequence[str], weights, columns: int = 5,
                     size: int = 224) -> Image.Image:
    """The image, then one panel per word: the image lit where the decoder looked for that word.

    `weights` holds one row per word, one weight per region of the encoder's square feature map
    (7 x 7 for MobileNetV2, 14 x 14 for VGG16); each row is stretched over the picture with bilinear
    smoothing and scaled from its least (dark) to its most attended region (full brightness). Since
    that scaling would make a nearly uniform row look sharp, each label also gives the largest weight
    (a uniform row over 49 regions has 2% everywhere).
    """
    import numpy as np

    weights = np.asarray(weights, dtype=np.float32)
    side = int(round(weights.shape[-1] ** 0.5)) if weights.size else 0
    if len(weights) != len(words) or (weights.size and side * side != weights.shape[-1]):
        raise ValueError(f"attention map: {len(words)} words but weights of shape {weights.shape} "
                         f"(one row of a square map per word expected)")
    # The encoder saw the image squashed to a square; the map is drawn over the same square.
    picture = image.convert("RGB").resize((size, size), Image.BILINEAR)
    pixels = np.asarray(picture, dtype=np.float32)
    panels = [(picture, "(image)")]
    for word, row in zip(words, weights):
        low, peak = float(row.min()), float(row.max())
        scaled = (row - low) / (peak - low) if peak > low else np.ones_like(row)
        grid = Image.fromarray(np.uint8(255 * scaled.reshape(side, side)), mode="L")
        light = np.asarray(grid.resize((size, size), Image.BILINEAR), dtype=np.float32)[..., None] / 255
        panels.append((Image.fromarray(np.uint8(pixels * (0.15 + 0.85 * light))), f"{word}  (max {peak:.0%})"))
    label_height = 26
    columns = min(columns, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure = Image.new("RGB", (columns * size, rows * (size + label_height)), "white")
    draw = ImageDraw.Draw(figure)
    for index, (panel, label) in enumerate(panels):
        left, top = (index % columns) * size, (index // columns) * (size + label_height)
        draw.text((left + 6, top + 4), label, fill="black", font=_font(16))
        figure.paste(panel, (left, top + label_height))
    return figure
