"""Finding a dataset's layout (Flickr8k official and Kaggle layouts, Flickr30k's token file, Karpathy
split files for Flickr8k/Flickr30k/COCO, your own caption table), resolving its splits, and batching
training data with tf.data. The caption files themselves are read by inputs/caption_files.py."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from inputs.caption_files import (SPLITS, DatasetError, parse_caption_table, parse_captions_csv, parse_karpathy_json,
                           parse_token_file, read_lines)
from inputs.vocabulary import clean_caption

IMAGE_FOLDERS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "flickr30k-images", "flickr30k_images", "images")
# Flickr8k's and Flickr30k's caption files share one format: IMAGE.jpg#N<TAB>caption.
TOKEN_FILES = {"Flickr8k.token.txt": "flickr8k", "results_20130124.token": "flickr30k"}
KARPATHY_FILES = ("dataset_flickr8k.json", "dataset_flickr30k.json", "dataset_coco.json")
SPLIT_FILES = {split: f"Flickr_8k.{split}Images.txt" for split in SPLITS}
TEXT_FOLDERS = ("Flickr8k_text", "")  # "": the dataset folder itself (joins without a "./")
# Flickr8k's official proportions: 6000 / 1000 / 1000.
SPLIT_FRACTIONS = {"train": 0.75, "dev": 0.125, "test": 0.125}


@dataclass
class Dataset:
    name: str
    layout: str
    image_dir: str
    captions: Dict[str, List[str]]  # image name -> cleaned captions
    splits: Dict[str, List[str]]  # split -> image names, in file order
    split_source: str
    skipped_captions: Dict[str, int] = field(default_factory=dict)

    def image_path(self, image_name: str) -> str:
        return os.path.join(self.image_dir, image_name)


def _find(data_dir: str, candidates: List[str]) -> Optional[str]:
    for candidate in candidates:
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    return None


def _read_split_files(text_dir: str) -> Optional[Dict[str, List[str]]]:
    paths = {split: os.path.join(text_dir, name) for split, name in SPLIT_FILES.items()}
    if not all(os.path.isfile(path) for path in paths.values()):
        return None
    return {split: [line.strip() for line in read_lines(path) if line.strip()] for split, path in paths.items()}


def draw_split(image_names: List[str], seed: int) -> Dict[str, List[str]]:
    """A seeded 75/12.5/12.5 split of sorted names: the same names always give the same split."""
    names = sorted(image_names)
    random.Random(seed).shuffle(names)
    n_dev = round(len(names) * SPLIT_FRACTIONS["dev"])
    n_test = round(len(names) * SPLIT_FRACTIONS["test"])
    n_train = len(names) - n_dev - n_test
    return {"train": names[:n_train], "dev": names[n_train:n_train + n_dev], "test": names[n_train + n_dev:]}


def load_dataset(data_dir: str, split_seed: int = 1234, limit: int = 0, need_images: bool = True,
                 captions_file: str = "", images_dir: str = "") -> Dataset:
    """Detects the layout of `data_dir`, reads and cleans its captions, and resolves its splits.

    With `captions_file` (and `images_dir`), that table of image/caption pairs is the dataset instead.
    With `need_images=False` the caption files alone will do (for scoring captions); `image_dir` is then
    empty when the dataset has no image folder.
    """
    if captions_file:
        if need_images and not images_dir:
            raise DatasetError(f"--captions_file {captions_file}: give --images_dir, the folder its image names "
                               f"are in")
        if images_dir and not os.path.isdir(images_dir):
            raise DatasetError(f"{images_dir}: no such image folder (--images_dir)")
        raw, table_splits = parse_caption_table(captions_file)
        name = os.path.splitext(os.path.basename(captions_file))[0].lower()
        return _dataset_from(name, "table", images_dir, raw, table_splits, f"split column of {captions_file}",
                             None, split_seed, limit, {})
    if not os.path.isdir(data_dir):
        raise DatasetError(f"{data_dir}: no such dataset folder")
    karpathy_file = _find(data_dir, [os.path.join(d, name) for d in TEXT_FOLDERS for name in KARPATHY_FILES])
    token_file = _find(data_dir, [os.path.join(d, name) for d in TEXT_FOLDERS for name in TOKEN_FILES])
    csv_file = _find(data_dir, ["captions.txt"])
    image_dir = _find(data_dir, list(IMAGE_FOLDERS))
    images_ok = bool(image_dir) or not need_images
    karpathy_splits = None
    if karpathy_file:
        # COCO's entries name their folder (filepath "val2014"), so without an image folder the
        # dataset folder itself is where the images are looked up.
        layout, image_dir = "karpathy", image_dir or os.path.abspath(data_dir)
        raw, karpathy_splits, karpathy_skipped = parse_karpathy_json(karpathy_file)
    elif token_file and images_ok:
        layout, raw = TOKEN_FILES[os.path.basename(token_file)], parse_token_file(token_file)
    elif csv_file and images_ok:
        layout, raw = "kaggle", parse_captions_csv(csv_file)
    else:
        raise DatasetError(
            f"{data_dir}: not a dataset folder. Looked for a Karpathy split file ({', '.join(KARPATHY_FILES)}), "
            f"the official Flickr8k layout (Flickr8k_text/Flickr8k.token.txt and an image folder "
            f"{'/'.join(IMAGE_FOLDERS[:3])}), Flickr30k's results_20130124.token with flickr30k-images/, "
            f"and the Kaggle layout (captions.txt and Images/)")

    split_files = None
    for text_dir in TEXT_FOLDERS if karpathy_splits is None else ():
        split_files = _read_split_files(os.path.join(data_dir, text_dir))
        if split_files:
            break
    name = os.path.basename(os.path.normpath(os.path.abspath(data_dir))).lower()
    if karpathy_splits is not None:
        return _dataset_from(name, layout, image_dir, raw, karpathy_splits,
                             f"Karpathy split file {os.path.basename(karpathy_file)}", None, split_seed, limit,
                             karpathy_skipped)
    return _dataset_from(name, layout, image_dir, raw, None, "", split_files, split_seed, limit, {})


def _dataset_from(name: str, layout: str, image_dir: Optional[str], raw: Dict[str, List[str]],
                  given_splits: Optional[Dict[str, List[str]]], given_source: str,
                  split_files: Optional[Dict[str, List[str]]], split_seed: int, limit: int,
                  skipped: Dict[str, int]) -> Dataset:
    """Cleans the raw captions and resolves the splits: given by the caption file, from the official
    split files, or drawn with the seed."""
    skipped = dict(skipped)
    captions: Dict[str, List[str]] = {}
    for image, texts in raw.items():
        cleaned = [clean_caption(text) for text in texts]
        kept = [caption for caption in cleaned if caption]
        if len(kept) < len(cleaned):
            reason = "caption empty after cleaning"
            skipped[reason] = skipped.get(reason, 0) + len(cleaned) - len(kept)
        if kept:
            captions[image] = kept
    if given_splits is not None:
        split_source = given_source
        splits = {split: [name for name in names if name in captions] for split, names in given_splits.items()}
    elif split_files:
        split_source = "official split files"
        splits = {split: [name for name in names if name in captions] for split, names in split_files.items()}
        no_captions = sum(len(names) for names in split_files.values()) - sum(len(v) for v in splits.values())
        if no_captions:
            skipped["split image without captions"] = no_captions
        in_a_split = set().union(*splits.values())
        outside = [name for name in captions if name not in in_a_split]
        if outside:
            # e.g. the original token file's key 2258277193_586949ec62.jpg.1, which names no image.
            skipped["captioned image in no split"] = len(outside)
    else:
        split_source = f"drawn with seed {split_seed} (75/12.5/12.5)"
        splits = draw_split(list(captions), split_seed)
    if limit > 0:
        splits = {split: names[:limit] for split, names in splits.items()}
    return Dataset(name, layout, image_dir or "", captions, splits, split_source, skipped)


def training_examples(captions_by_image: Dict[str, List[str]], image_rows: Dict[str, int],
                      encode, caption_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One (feature row, encoded caption) pair per caption of every image that has features."""
    rows, tokens = [], []
    for image, captions in captions_by_image.items():
        if image not in image_rows:
            continue
        for caption in captions:
            rows.append(image_rows[image])
            tokens.append(encode(caption, caption_length))
    if not rows:
        return np.zeros((0,), np.int64), np.zeros((0, caption_length + 2), np.int32)
    return np.asarray(rows, dtype=np.int64), np.stack(tokens)


def caption_batches(features: np.ndarray, feature_rows: np.ndarray, caption_tokens: np.ndarray,
                    batch_size: int, shuffle: bool, seed: int, length_window: int = 0,
                    shard: tuple = (0, 1), drop_remainder: bool = False, flat_targets: bool = False):
    """A tf.data pipeline of teacher-forcing batches.

    Each element is ({"image_features", "caption_tokens"}, next_words, weights): the decoder reads
    `<start> w1 .. wn` and must predict `w1 .. wn <end>` at every position in one pass; padding gets
    weight 0. Only indices and token ids live in the pipeline: feature rows are read from the store
    batch by batch (`FeatureRows`), so memory does not grow with the dataset.

    `length_window` > 0 (with shuffle): the shuffled captions are taken `length_window` batches at a
    time and sorted by length inside that window, so each batch holds captions of similar length and
    carries little padding; the batches are then shuffled again, so batch order stays random.

    `shard` = (index, count): keep every count-th caption of the (shuffled) order, starting at index.
    Every distributed worker shuffles with the same seed, so the shards are disjoint in every epoch.

    `flat_targets`: elements are (inputs + {"next_words"}, real next words) for `build_training_model`,
    the targets flattened in row order with the padding left out.
    """
    import tensorflow as tf

    feature_shape = tuple(features.shape[1:])  # (dim,), or (regions, channels) for spatial features

    def gather(rows):
        return np.asarray(features[rows], np.float32)  # float16 stores are widened here

    # Plain tensor code: AutoGraph has nothing to convert, and it trips over the local `tf` import.
    @tf.autograph.experimental.do_not_convert
    def to_model_inputs(rows, tokens):
        image_features = tf.numpy_function(gather, [rows], tf.float32)
        image_features.set_shape([None, *feature_shape])
        # Cut the padding that no caption of this batch needs: most captions are far shorter than the longest.
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(tokens != 0, tf.int32), axis=1))
        tokens = tokens[:, :longest]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        real = tf.not_equal(targets, 0)
        if flat_targets:
            return ({"image_features": image_features, "caption_tokens": inputs, "next_words": targets},
                    tf.boolean_mask(targets, real))
        return {"image_features": image_features, "caption_tokens": inputs}, targets, tf.cast(real, tf.float32)

    @tf.autograph.experimental.do_not_convert
    def sort_by_length(rows, tokens):
        order = tf.argsort(tf.reduce_sum(tf.cast(tokens != 0, tf.int32), axis=1), stable=True)
        return tf.gather(rows, order), tf.gather(tokens, order)

    dataset = tf.data.Dataset.from_tensor_slices((feature_rows, caption_tokens))
    if shuffle:
        dataset = dataset.shuffle(len(feature_rows), seed=seed, reshuffle_each_iteration=True)
    shard_index, shard_count = shard
    if shard_count > 1:
        dataset = dataset.shard(shard_count, shard_index)
    if shuffle and length_window > 0:
        dataset = dataset.batch(batch_size * length_window).map(sort_by_length)
        dataset = dataset.rebatch(batch_size, drop_remainder=drop_remainder)
        dataset = dataset.shuffle(length_window, seed=seed + 1, reshuffle_each_iteration=True)
        # rebatch hides the batch count from Keras, which then warns that the data "ran out".
        captions = len(range(shard_index, len(feature_rows), shard_count))
        batches = captions // batch_size if drop_remainder else (captions + batch_size - 1) // batch_size
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    else:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
