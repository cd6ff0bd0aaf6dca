"""Image files to pixels: the one loader behind preprocess, predict, fine-tuning and the web page.

Every script reads an image here, so a file gets the same pixels, and so the same features,
whichever script reads it. graph_images.py (serving/) repeats these steps as TensorFlow operations
for exported models, and tests/test_export.py holds the two to the same pixels.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The files predict.py takes from a folder and the web page accepts.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Larger images are refused outright: decoding them could take gigabytes.
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
EXIF_ORIENTATION = 0x0112
_MODE_NAMES = {"L": "grayscale", "1": "black-and-white", "I;16": "16-bit grayscale", "P": "palette"}


class ImageError(ValueError):
    """An image that cannot be used; `kind` names the problem for the skip report."""

    def __init__(self, kind: str, path: str, detail: str = ""):
        super().__init__(f"{path}: {kind}" + (f" ({detail})" if detail else ""))
        self.kind = kind


def load_image(path: str, size: int) -> Tuple[np.ndarray, Optional[str]]:
    """Decodes an image to RGB float32 pixels of size x size (0-255), and what had to be converted.

    A photo with an EXIF orientation is turned upright first. Grayscale, palette, RGBA and CMYK are
    converted to RGB (transparency onto white); a very large JPEG is decoded at reduced scale.
    Anything unusable raises ImageError.
    """
    if not os.path.exists(path):
        raise ImageError("missing file", path)
    if os.path.getsize(path) == 0:
        raise ImageError("empty file", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                conversions = []
                if image.width * image.height > 4096 * 4096:
                    conversions.append("huge image downscaled")
                    image.draft("RGB", (size * 4, size * 4))  # JPEG only: decode at 1/2..1/8 scale
                image.load()
                orientation = image.getexif().get(EXIF_ORIENTATION, 1)
                if orientation != 1:
                    # Phones store a portrait photo sideways and say so in EXIF: turn it the way it was taken.
                    image = ImageOps.exif_transpose(image)
                    conversions.append(f"turned upright (EXIF orientation {orientation})")
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    conversions.append("transparency put on white")
                    rgba = image.convert("RGBA")
                    image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
                elif image.mode != "RGB":
                    conversions.append(f"{_MODE_NAMES.get(image.mode, image.mode)} converted to RGB")
                image = image.convert("RGB")
                if image.size != (size, size):
                    image = image.resize((size, size), Image.BILINEAR)
                return np.asarray(image, dtype=np.float32), ", ".join(conversions) or None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError("image too large", path, str(error).split(".")[0]) from None
    except UnidentifiedImageError:
        raise ImageError("not an image", path) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError("corrupt or truncated image", path, str(error)) from None



def image_reader(paths: Sequence[str], size: int, failures: Dict[int, ImageError],
                 conversions: Optional[Dict[int, str]] = None) -> Callable:
    """A tf.data map function: index -> (index, pixels (size, size, 3), readable).

    The image is decoded by `load_image` (Pillow) inside the pipeline's parallel map, so every
    pipeline reads exactly the pixels predict.py reads. An unreadable image gives zeros with
    readable False, and its ImageError lands in `failures` (index -> error); what had to be converted
    lands in `conversions`.
    """
    import tensorflow as tf

    def load(index):
        index = int(index)
        try:
            pixels, conversion = load_image(paths[index], size)
        except ImageError as error:
            failures[index] = error
            return np.zeros((size, size, 3), np.float32), False
        if conversion and conversions is not None:
            conversions[index] = conversion
        return pixels, True

    @tf.autograph.experimental.do_not_convert
    def read(index):
        pixels, readable = tf.numpy_function(load, [index], [tf.float32, tf.bool], stateful=True)
        pixels.set_shape([size, size, 3])
        readable.set_shape([])
        return index, pixels, readable

    return read


def load_batches(paths: Sequence[str], size: int, batch_size: int) -> Iterator[
        Tuple[List[int], np.ndarray, List[Tuple[int, ImageError]], List[Tuple[int, str]]]]:
    """Yields (indices, pixels, failures, conversions) batch by batch, in order.

    A tf.data pipeline reads and decodes images in parallel and keeps batches ready ahead
    (prefetch), so the encoder does not wait for JPEG decoding.
    """
    import tensorflow as tf

    failures: Dict[int, ImageError] = {}
    conversions: Dict[int, str] = {}
    pipeline = (tf.data.Dataset.range(len(paths))
                .map(image_reader(paths, size, failures, conversions), num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True)
                .batch(batch_size)
                .prefetch(2))
    for indices, pixels, readable in pipeline.as_numpy_iterator():
        indices = [int(i) for i in indices]
        yield ([i for i, good in zip(indices, readable) if good], pixels[readable],
               [(i, failures.pop(i)) for i in indices if i in failures],
               [(i, conversions.pop(i)) for i in indices if i in conversions])
