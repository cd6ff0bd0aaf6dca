"""Stage 1: dataset folder -> run folder with features, vocabulary, captions and metadata.

    python preprocess.py --data_dir ../shared/data/flickr8k --encoder efficientnet_lite0   # the shipped package's
    python preprocess.py --data_dir ../shared/data/flickr8k --encoder mobilenet_v2 --weights PATH   # offline
    python preprocess.py --download flickr8k --data_dir data/flickr8k      # fetch Flickr8k first
    python preprocess.py --shard 0/2 ...   (on machine 1; --shard 1/2 on machine 2; then without --shard to merge)
    python preprocess.py --features_from runs/tuned --run_dir runs/tuned_s7   # another run's features, to
                                                      # train another decoder on them (an ensemble member)

Safe to interrupt: run the same command again and it resumes where it stopped.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from config import PREPROCESS_FLAGS, SAMPLE_DATA_DIR, Config, parse_config, quiet_tensorflow, run_script

quiet_tensorflow()

from data_loader import SPLITS, Dataset, load_dataset  # noqa: E402
from inputs.download import download_dataset  # noqa: E402
from inputs.encoders import ENCODERS, open_encoder  # noqa: E402
from inputs.extraction import extract, report  # noqa: E402
from inputs.feature_store import FeatureStore, check_features_written, merge_shards, shard_name  # noqa: E402
from inputs.json_files import read_json, write_json  # noqa: E402
from inputs.litert_encoder import check_extractor, open_extractor  # noqa: E402
from inputs.run_folder import CAPTIONS, METADATA, VOCABULARY, save_config  # noqa: E402
from inputs.vocabulary import Vocabulary  # noqa: E402


def is_bundled_sample(data_dir: str) -> bool:
    return os.path.abspath(data_dir) == os.path.abspath(SAMPLE_DATA_DIR)


def parse_shard(text: str) -> Optional[Tuple[int, int]]:
    """`--shard I/N` as (I, N); None when not sharding."""
    if not text:
        return None
    index, slash, count = text.partition("/")
    if not (slash and index.isdigit() and count.isdigit() and int(count) >= 1 and int(index) < int(count)):
        raise ValueError(f"--shard {text}: expected I/N with 0 <= I < N, e.g. --shard 0/2 and --shard 1/2")
    return int(index), int(count)


def copy_features_from(source_dir: str, run_dir: str) -> dict:
    """Starts `run_dir` from `source_dir`'s preprocessed data (and fine-tuned encoder); the new metadata.

    Files are copied under temporary names and renamed, metadata last: a folder without metadata is
    not started, and running the same command again after an interruption copies again."""
    source_metadata = os.path.join(source_dir, METADATA)
    if not os.path.exists(source_metadata):
        raise ValueError(f"--features_from {source_dir}: no {METADATA}; name a run folder that preprocess.py "
                         f"(or train.py) has filled")
    if os.path.abspath(source_dir) == os.path.abspath(run_dir):
        raise ValueError(f"--features_from {source_dir} is the run folder itself: give a new --run_dir")
    metadata = read_json(source_metadata)
    origin = os.path.abspath(source_dir)
    existing = os.path.join(run_dir, METADATA)
    if os.path.exists(existing):
        copied = read_json(existing)
        if copied.get("features_from") == origin:
            return copied  # copied before: nothing to do
        raise ValueError(f"{run_dir} already has its own features; --features_from starts a new run: give a new "
                         f"--run_dir")
    check_features_written(source_dir, metadata)
    tuned = metadata.get("fine_tuned_encoder")
    store = metadata["feature_store"]["name"]
    names = [VOCABULARY, CAPTIONS] + [store + suffix for suffix in (".bin", ".index", ".json")]
    names += [tuned["file"]] if tuned else []
    missing = [name for name in names if not os.path.exists(os.path.join(source_dir, name))]
    if missing:
        raise ValueError(f"--features_from {source_dir}: no {missing[0]}; the run folder is incomplete")
    os.makedirs(run_dir, exist_ok=True)
    for name in names:
        shutil.copyfile(os.path.join(source_dir, name), os.path.join(run_dir, name + ".partial"))
        os.replace(os.path.join(run_dir, name + ".partial"), os.path.join(run_dir, name))
    metadata = {**metadata, "features_from": origin}
    write_json(existing, metadata)
    kind = "the fine-tuned encoder, its features" if tuned else "the features"
    print(f"copied {kind}, vocabulary and captions of {source_dir} into {run_dir}")
    return metadata


def preprocess(config: Config) -> dict:
    """Fills the run folder: features (resumable), then vocabulary, captions and metadata; the metadata."""
    if config.features_from:
        if config.shard or config.download:
            raise ValueError("--features_from copies a finished run's features: leave out --shard and --download")
        metadata = copy_features_from(config.features_from, config.resolved_run_dir())
        save_config(config, config.resolved_run_dir(), "preprocess")
        return metadata
    if config.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {config.encoder!r}; choose one of {', '.join(ENCODERS)}")
    shard = parse_shard(config.shard)
    if config.download:
        if is_bundled_sample(config.data_dir):
            raise ValueError(f"--download {config.download}: give --data_dir FOLDER to download into")
        download_dataset(config.download, config.data_dir)
    # Fails before anything is written.
    dataset = load_dataset(config.data_dir, config.split_seed, config.limit, captions_file=config.captions_file,
                           images_dir=config.images_dir)
    run_dir = config.resolved_run_dir()
    check_extractor(config.extract_with)
    encoder_model, weights = open_encoder(config.encoder, config.weights,
                                          is_bundled_sample(config.data_dir) and not config.captions_file,
                                          config.encoder_seed, config.features)
    if os.path.isfile(weights):
        weights = os.path.abspath(weights)  # predict.py may run from another folder
    save_config(config, run_dir, "preprocess")
    store, wanted, skipped = extract_features(config, dataset, run_dir, encoder_model, weights, shard)
    if shard:
        print(f"wrote {store.rows_path}: shard {config.shard}, {len(store)} images; run preprocess.py without "
              f"--shard (same --run_dir) once every shard's files are in it, to merge them and finish")
        return {"shard": config.shard, "images": len(store), "skipped_images": dict(skipped)}
    converted: Dict[str, List[str]] = defaultdict(list)
    for name in wanted:  # conversions are kept in the store, so earlier runs' count too
        if name in store.notes:
            converted[store.notes[name]].append(name)
    report("converted", converted)
    return write_run(config, dataset, run_dir, store, weights, {"skipped_images": dict(skipped),
                                                                "converted_images": dict(converted)})


def extract_features(config: Config, dataset: Dataset, run_dir: str, encoder_model, weights: str,
                     shard: Optional[Tuple[int, int]]) -> Tuple[FeatureStore, List[str], Dict[str, List[str]]]:
    """Extracts the features of every split image (or of one shard) not in the store yet;
    (the store, the images wanted, the images skipped by reason)."""
    identity = {"encoder": config.encoder, "weights": weights,
                "encoder_seed": str(config.encoder_seed) if weights == "none" else ""}
    spatial = config.features == "spatial"
    store_name = f"features_{config.encoder}" + ("_spatial" if spatial else "")
    # A spatial map is 25-50x larger than a pooled vector; half precision halves the disk and the reads.
    # Not for an untrained encoder: its activations can lie far below float16's range (MobileNetV2's
    # are about 1e-11) and would all round to zero.
    dtype = "float16" if spatial and weights != "none" else "float32"
    spec = ENCODERS[config.encoder]
    shape = spec.feature_shape(config.features)
    wanted = list(dict.fromkeys(name for split in SPLITS for name in dataset.splits[split]))
    if shard:
        # Every machine lists the same images in the same order and takes every N-th, starting at I.
        wanted = wanted[shard[0]::shard[1]]
        store_name = shard_name(store_name, *shard)
    store = FeatureStore(run_dir, store_name, shape, dtype, identity)
    if store.replaced:
        print(f"note: {store_name} was made with other encoder settings; extracting again", file=sys.stderr)
    if not shard:
        for merged_shard, count in merge_shards(store):
            print(f"merged {count} images' features from {merged_shard}")
    todo = [name for name in wanted if name not in store]
    print(f"{dataset.name}: {len(wanted)} images {'in shard ' + config.shard if shard else 'in the splits'}, "
          f"{len(wanted) - len(todo)} already extracted, {len(todo)} to go ({config.encoder} {config.features} "
          f"features {'x'.join(map(str, shape))}, weights: {weights})")
    extractor = open_extractor(encoder_model, config.extract_with) if todo else encoder_model
    skipped = extract(store, [dataset.image_path(name) for name in todo], todo, extractor, spec.input_size,
                      config.extract_batch_size)
    report("skipped", skipped)
    return store, wanted, skipped


def write_run(config: Config, dataset: Dataset, run_dir: str, store: FeatureStore, weights: str,
              image_notes: dict) -> dict:
    """Vocabulary, captions and metadata of a run whose features are extracted; the metadata, written last."""
    train_captions = [caption for name in dataset.splits["train"] if name in store
                      for caption in dataset.captions[name]]
    if not train_captions:
        raise ValueError(f"{config.captions_file or config.data_dir}: none of the {len(dataset.splits['train'])} "
                         f"training images could be read (see the skipped lines above)")
    vocabulary = Vocabulary.build(train_captions, config.min_word_count)
    vocabulary.save(os.path.join(run_dir, VOCABULARY))
    max_length = min(max(len(caption.split()) for caption in train_captions), config.max_caption_words)
    write_json(os.path.join(run_dir, CAPTIONS),
               {split: {name: dataset.captions[name] for name in names} for split, names in dataset.splits.items()})
    spec = ENCODERS[config.encoder]
    shape = spec.feature_shape(config.features)
    metadata = {
        "dataset": dataset.name,
        "data_dir": os.path.abspath(config.data_dir),
        "captions_file": os.path.abspath(config.captions_file) if config.captions_file else "",
        "image_dir": os.path.abspath(dataset.image_dir),
        "layout": dataset.layout,
        "split_source": dataset.split_source,
        "encoder": config.encoder,
        "weights": weights,
        "encoder_seed": config.encoder_seed,
        "input_size": spec.input_size,
        "features": config.features,
        "feature_dim": shape[-1],
        "feature_shape": list(shape),
        "feature_store": {"name": os.path.basename(store.rows_path)[:-len(".bin")], "dtype": store.dtype.name,
                          "identity": store.identity},
        "vocabulary_size": len(vocabulary),
        "min_word_count": config.min_word_count,
        "max_caption_length": max_length,
        "images": {split: {"in_split": len(names), "with_features": sum(name in store for name in names)}
                   for split, names in dataset.splits.items()},
        "training_captions": len(train_captions),
        **image_notes,
        "skipped_captions": dataset.skipped_captions,
    }
    write_json(os.path.join(run_dir, METADATA), metadata)
    counts = ", ".join(f"{split} {v['with_features']}/{v['in_split']}" for split, v in metadata["images"].items())
    print(f"wrote {run_dir}: images with features {counts}; vocabulary {len(vocabulary)} words; "
          f"longest caption {max_length} words")
    for reason, count in dataset.skipped_captions.items():
        print(f"note: caption entries left out: {reason}: {count}", file=sys.stderr)
    return metadata


def main(argv: list[str] | None = None) -> int:
    config = parse_config(PREPROCESS_FLAGS, __doc__.splitlines()[0], argv)
    preprocess(config)
    return 0


if __name__ == "__main__":
    run_script(main)
