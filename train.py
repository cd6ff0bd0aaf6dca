"""Stage 2: run folder (features, vocabulary, captions) -> trained merge decoder `model.keras`.

    python train.py --epochs 20 --batch_size 32

Runs preprocess.py first when the run folder has no metadata yet, so this one command goes from
images to a model. Keeps the model with the lowest dev loss; `--resume` continues an interrupted run.
"""
from __future__ import annotations

import json
import math
import os
import sys
import warnings

from config import TRAIN_FLAGS, Config, parse_config, quiet_tensorflow, run_script, save_config

quiet_tensorflow()

import keras  # noqa: E402

from data_loader import caption_batches, training_examples  # noqa: E402
from feature_store import open_features  # noqa: E402
from model import build_merge_model, compile_model  # noqa: E402
from preprocess import METADATA, preprocess, write_json  # noqa: E402
from vocabulary import Vocabulary  # noqa: E402

BEST_MODEL, LAST_MODEL, STATE, HISTORY = "model.keras", "last_epoch.keras", "training_state.json", "history.csv"


class EpochBookkeeping(keras.callbacks.Callback):
    """After each epoch: saves the resumable checkpoint, keeps the best model, prints one line."""

    def __init__(self, run_dir: str, epochs: int, monitor: str, best: float, best_epoch: int, patience: int):
        super().__init__()
        self.run_dir, self.epochs, self.monitor = run_dir, epochs, monitor
        self.best, self.best_epoch, self.patience = best, best_epoch, patience

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor, math.inf)
        improved = value < self.best
        if improved:
            self.best, self.best_epoch = value, epoch + 1
            self.model.save(os.path.join(self.run_dir, BEST_MODEL))
        # The checkpoint first, then the state that points at it: a crash between the two
        # only repeats one epoch.
        self.model.save(os.path.join(self.run_dir, LAST_MODEL))
        write_json(os.path.join(self.run_dir, STATE),
                   {"epochs_done": epoch + 1, "monitor": self.monitor, "best": self.best,
                    "best_epoch": self.best_epoch})
        shown = "  ".join(f"{key} {value:.4f}" for key, value in logs.items() if key != "learning_rate")
        print(f"epoch {epoch + 1}/{self.epochs}  {shown}" + ("  (best so far: saved)" if improved else ""),
              flush=True)
        if self.patience and epoch + 1 - self.best_epoch >= self.patience:
            print(f"stopping early: no better {self.monitor} for {self.patience} epochs "
                  f"(best at epoch {self.best_epoch})")
            self.model.stop_training = True


def load_run(run_dir: str):
    with open(os.path.join(run_dir, METADATA), encoding="utf-8") as handle:
        metadata = json.load(handle)
    with open(os.path.join(run_dir, "captions.json"), encoding="utf-8") as handle:
        captions = json.load(handle)
    vocabulary = Vocabulary.load(os.path.join(run_dir, "vocabulary.json"))
    return metadata, captions, vocabulary


def train(config: Config) -> dict:
    run_dir = config.resolved_run_dir()
    if not os.path.exists(os.path.join(run_dir, METADATA)):
        print(f"{run_dir} has no features yet: running preprocess first")
        preprocess(config)
    metadata, captions, vocabulary = load_run(run_dir)
    save_config(config, run_dir, "train")
    features, image_rows = open_features(run_dir, metadata)
    length = metadata["max_caption_length"]
    train_rows, train_tokens = training_examples(captions["train"], image_rows, vocabulary.encode, length)
    dev_rows, dev_tokens = training_examples(captions["dev"], image_rows, vocabulary.encode, length)
    if len(train_rows) == 0:
        raise ValueError(f"{run_dir}: no training captions with image features; run preprocess.py again")
    print(f"training on {len(train_rows)} captions of {len(set(train_rows.tolist()))} images, "
          f"validating on {len(dev_rows)} dev captions; encoder {metadata['encoder']}, weights {metadata['weights']}")

    keras.utils.set_random_seed(config.seed)
    train_batches = caption_batches(features, train_rows, train_tokens, config.batch_size, True, config.seed)
    dev_batches = caption_batches(features, dev_rows, dev_tokens, config.batch_size, False, config.seed) \
        if len(dev_rows) else None
    monitor = "val_loss" if dev_batches is not None else "loss"
    if dev_batches is None:
        print("warning: no dev images with features; keeping the model with the lowest training loss",
              file=sys.stderr)

    state_path, last_path = os.path.join(run_dir, STATE), os.path.join(run_dir, LAST_MODEL)
    initial_epoch, best, best_epoch = 0, math.inf, 0
    if config.resume and os.path.exists(state_path) and os.path.exists(last_path):
        with open(state_path, encoding="utf-8") as handle:
            state = json.load(handle)
        initial_epoch, best, best_epoch = state["epochs_done"], state["best"], state.get("best_epoch", 0)
        model = keras.models.load_model(last_path)
        print(f"resuming after epoch {initial_epoch} (best {state['monitor']} {best:.4f})")
    else:
        if config.resume:
            print("nothing to resume in this run folder: starting from scratch", file=sys.stderr)
        model = build_merge_model(config, len(vocabulary), metadata["feature_dim"])
        compile_model(model, config.learning_rate)
    if config.patience and initial_epoch - best_epoch >= config.patience:
        print(f"stopped early before (best at epoch {best_epoch}, patience {config.patience}): nothing to do")
        return {"epochs_done": initial_epoch, "best": best, "best_epoch": best_epoch}
    if initial_epoch >= config.epochs:
        print(f"already trained for {initial_epoch} epochs (asked for {config.epochs}): nothing to do")
        return {"epochs_done": initial_epoch, "best": best}

    # Keras warns that it cannot shuffle a tf.data pipeline; ours shuffles itself.
    warnings.filterwarnings("ignore", message=".*shuffle=True.*was passed")
    model.fit(train_batches, validation_data=dev_batches, epochs=config.epochs, initial_epoch=initial_epoch,
              verbose=1 if sys.stdout.isatty() else 2,
              callbacks=[keras.callbacks.CSVLogger(os.path.join(run_dir, HISTORY), append=initial_epoch > 0),
                         EpochBookkeeping(run_dir, config.epochs, monitor, best, best_epoch, config.patience)])
    with open(state_path, encoding="utf-8") as handle:
        state = json.load(handle)
    print(f"best {state['monitor']} {state['best']:.4f}; model saved as {os.path.join(run_dir, BEST_MODEL)}")
    return state


def main(argv: list[str] | None = None) -> int:
    train(parse_config(TRAIN_FLAGS, __doc__.splitlines()[0], argv))
    return 0


if __name__ == "__main__":
    run_script(main)
