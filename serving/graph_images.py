"""Image decoding as TensorFlow operations, for exported models: encoded bytes in, the pixels
`encoders.load_image` gives for the same file out.

An exported model must turn a file into the features predict.py computes for it, without Pillow
and without this repository. So the same steps happen here in the graph: decode (JPEG, PNG, GIF's
first frame, BMP), turn a photo upright by its EXIF orientation, put transparency on white, make
grayscale RGB, and resize to the encoder's square input with an antialiased bilinear filter. Pillow
resizes 8-bit pixels and rounds; so does this. tests/test_export.py compares both on every case.
"""
from __future__ import annotations

import tensorflow as tf

JPEG_START = b"\xff\xd8"
EXIF_MARKER = b"Exif\x00\x00"  # opens the APP1 segment that holds a JPEG's EXIF block
EXIF_SEARCH_BYTES = 65536  # APP1 sits right after the start marker and is at most 64 KB long
EXIF_ORIENTATION_TAG = 0x0112
MAX_IFD_ENTRIES = 64  # IFD0 of a camera file holds 10-20 entries


def exif_orientation(encoded: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (1-8) of one encoded JPEG; 1 for any other file or when there is none."""
    head = tf.strings.substr(encoded, 0, EXIF_SEARCH_BYTES)
    before_marker = tf.strings.split(head, sep=EXIF_MARKER, maxsplit=1)
    found = tf.size(before_marker) > 1
    raw = tf.io.decode_raw(head, tf.uint8)
    # Padded, so every read below stays inside the array even in a damaged block.
    data = tf.cast(tf.concat([raw, tf.zeros([12 * MAX_IFD_ENTRIES + 16], tf.uint8)], 0), tf.int32)
    last = tf.size(data) - 1

    def byte(index):
        return tf.gather(data, tf.clip_by_value(index, 0, last))

    tiff = tf.strings.length(before_marker[0]) + len(EXIF_MARKER)  # TIFF header: byte order, 42, IFD0 offset
    little_endian = tf.equal(byte(tiff), 0x49)  # "II"; "MM" is big-endian

    def unsigned(index, size):
        value = tf.zeros_like(index)
        for position in range(size):
            weight = tf.where(little_endian, 256 ** position, 256 ** (size - 1 - position))
            value += byte(index + position) * weight
        return value

    ifd = tiff + unsigned(tiff + 4, 4)
    entries = ifd + 2 + 12 * tf.range(MAX_IFD_ENTRIES)
    is_orientation = (tf.equal(unsigned(entries, 2), EXIF_ORIENTATION_TAG)
                      & (tf.range(MAX_IFD_ENTRIES) < unsigned(ifd, 2)))
    value = tf.reduce_max(tf.where(is_orientation, unsigned(entries + 8, 2), 0))
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 2), tf.constant(JPEG_START))
    valid = found & is_jpeg & (value >= 1) & (value <= 8)
    return tf.where(valid, value, 1)


def turn_upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Applies what Pillow's ImageOps.exif_transpose does for each orientation value."""
    transpose = lambda: tf.transpose(image, [1, 0, 2])  # noqa: E731
    return tf.switch_case(orientation - 1, [
        lambda: image,
        lambda: tf.reverse(image, [1]),  # 2: mirrored
        lambda: tf.image.rot90(image, 2),  # 3: upside down
        lambda: tf.reverse(image, [0]),  # 4: mirrored upside down
        transpose,  # 5
        lambda: tf.image.rot90(image, 3),  # 6: the usual portrait photo of a phone
        lambda: tf.image.rot90(transpose(), 2),  # 7
        lambda: tf.image.rot90(image, 1),  # 8
    ])


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """Any decoded channel count as RGB; transparency composited onto white, as load_image does."""
    channels = tf.shape(image)[-1]
    pixels = tf.cast(image, tf.float32)

    def on_white(color, alpha):
        alpha = alpha / 255.0
        return tf.round(color * alpha + 255.0 * (1.0 - alpha))

    return tf.switch_case(tf.clip_by_value(channels, 1, 4) - 1, [
        lambda: tf.tile(pixels[..., :1], [1, 1, 3]),
        lambda: tf.tile(on_white(pixels[..., :1], pixels[..., 1:2]), [1, 1, 3]),
        lambda: pixels[..., :3],
        lambda: on_white(pixels[..., :3], pixels[..., 3:4]),
    ])


def image_pixels(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """(size, size, 3) float32 pixels, 0-255, of one encoded image. An unreadable file raises
    InvalidArgumentError for the request that holds it."""
    # Pillow decodes JPEG with libjpeg's accurate integer DCT; TensorFlow's default is the fast one,
    # which moves pixels by about 1 on average.
    image = tf.cond(tf.equal(tf.strings.substr(encoded, 0, 2), tf.constant(JPEG_START)),
                    lambda: tf.io.decode_jpeg(encoded, channels=0, dct_method="INTEGER_ACCURATE"),
                    lambda: tf.io.decode_image(encoded, channels=0, expand_animations=False, dtype=tf.uint8))
    image = to_rgb(turn_upright(image, exif_orientation(encoded)))
    height, width = tf.shape(image)[0], tf.shape(image)[1]

    def resized():
        smaller = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
        return tf.round(tf.clip_by_value(smaller, 0.0, 255.0))

    pixels = tf.cond((height == size) & (width == size), lambda: image, resized)
    return tf.ensure_shape(pixels, [size, size, 3])


def batch_pixels(encoded_images: tf.Tensor, size: int) -> tf.Tensor:
    """(batch, size, size, 3) pixels of a batch of encoded images (a 1-D string tensor)."""
    return tf.map_fn(lambda encoded: image_pixels(encoded, size), encoded_images,
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
