"""Pictures of a run: training curves and the evaluation report's grid (matplotlib), the report's
HTML page, and attention maps (Pillow: the photo, lit per word).
"""
from __future__ import annotations

import html
import os
import textwrap
from typing import Dict, List, Optional, Sequence

from PIL import Image, ImageDraw, ImageFont


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: one fixed size only
        return ImageFont.load_default()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as pyplot

    return pyplot


def _save(figure, path: str) -> None:
    """Writes through a temporary file, so a reader never sees half a PNG."""
    temporary = path + ".tmp.png"
    figure.savefig(temporary, dpi=100)
    _pyplot().close(figure)
    os.replace(temporary, path)


def plot_training_curves(history: Sequence[Dict[str, object]], path: str, kept_epoch: Optional[int] = None) -> None:
    """Loss (training and dev) and dev BLEU-4 / CIDEr-D by epoch, side by side, as an 1100 x 440 PNG.

    Self-critical epochs (objective "scst") are shaded orange and their mean sample reward is drawn
    beside the dev metrics; encoder fine-tuning epochs ("fine_tune") are shaded green; `kept_epoch`,
    the epoch of the run's model.keras, is marked on both panels.
    """
    pyplot = _pyplot()
    figure, (loss_axes, metric_axes) = pyplot.subplots(1, 2, figsize=(11, 4.4))

    def series(axes, name, label, style="-o"):
        points = [(row["epoch"], row[name]) for row in history if name in row]
        if points:
            axes.plot(*zip(*points), style, markersize=4, label=label)

    series(loss_axes, "loss", "training loss")
    series(loss_axes, "val_loss", "dev loss")
    series(metric_axes, "dev_bleu4", "dev BLEU-4")
    series(metric_axes, "dev_cider", "dev CIDEr-D")
    series(metric_axes, "reward", "self-critical reward (training samples)", ":s")
    phases = [(epochs, color, label) for objective, color, label in (
        ("scst", "tab:orange", "self-critical training"), ("fine_tune", "tab:green", "encoder fine-tuning"))
        if (epochs := [row["epoch"] for row in history if row.get("objective") == objective])]
    for axes in (loss_axes, metric_axes):
        for epochs, color, label in phases:
            axes.axvspan(min(epochs) - 0.5, max(epochs) + 0.5, color=color, alpha=0.12, label=label)
        if kept_epoch:
            axes.axvline(kept_epoch, color="grey", linestyle="--", label=f"kept model (epoch {kept_epoch:g})")
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
        if axes.lines or phases:
            axes.legend(fontsize=8)
    loss_axes.set_title("loss (per word, cross-entropy)")
    metric_axes.set_title("dev metrics (greedy captions)")
    if not history:
        metric_axes.text(0.5, 0.5, "no epochs yet", ha="center", transform=metric_axes.transAxes)
    figure.tight_layout()
    _save(figure, path)


def write_report(entries: List[dict], html_path: str, png_path: str, title: str, sort_by: str,
                 grid_each: int = 6) -> None:
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
    write_grid(shown, png_path, f"{title}: best {min(grid_each, len(ranked))} and worst by {sort_by}"
               if len(ranked) > 2 * grid_each else f"{title}, best {sort_by} first", sort_by)


def write_grid(entries: List[dict], png_path: str, title: str, sort_by: str, columns: int = 4) -> None:
    """A PNG grid of images, each with its generated caption (bold), its score and two references."""
    pyplot = _pyplot()
    columns = min(columns, max(1, len(entries)))
    rows = (len(entries) + columns - 1) // columns
    figure, axes_grid = pyplot.subplots(rows, columns, figsize=(3.2 * columns, 4.3 * rows), squeeze=False)
    for axes in axes_grid.flat:
        axes.axis("off")
    for axes, entry in zip(axes_grid.flat, entries):
        try:
            with Image.open(entry["image_path"]) as picture:
                axes.imshow(picture.convert("RGB"))
        except (OSError, TypeError, ValueError, AttributeError):
            axes.text(0.5, 0.5, "image not available", ha="center", va="center", color="grey")
        score = entry["scores"].get(sort_by) or 0.0
        references = "\n".join(textwrap.shorten("ref: " + text, 44) for text in entry["references"][:2])
        axes.set_title("\n".join(textwrap.wrap(entry["generated"], 36)[:3]), fontsize=9, fontweight="bold",
                       loc="left")
        axes.text(0, -0.04, f"{sort_by} {score:.3f}\n{references}", transform=axes.transAxes, fontsize=7.5,
                  va="top", color="dimgrey")
    figure.suptitle(title, fontsize=12, x=0.01, ha="left")
    figure.tight_layout()
    _save(figure, png_path)


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
