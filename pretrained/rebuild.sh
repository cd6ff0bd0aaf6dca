#!/usr/bin/env bash
# Rebuilds pretrained/flickr8k_mobilenet_v2 from Flickr8k with one command, then scores it on dev:
#
#   pretrained/rebuild.sh FLICKR8K_DIR [WEIGHTS]
#
# FLICKR8K_DIR: Flickr8k in the official or the Kaggle layout (docs/datasets.md).
# WEIGHTS: imagenet (default; Keras downloads MobileNetV2's weights once) or a local Keras weights
# file of MobileNetV2 without its top. The run folder is runs/pretrained_flickr8k ($RUN); an
# interrupted rebuild continues where it stopped when run again (both training phases resume).
# $PACKAGE (default pretrained/flickr8k_mobilenet_v2) is where the package is written.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: pretrained/rebuild.sh FLICKR8K_DIR [WEIGHTS]}
WEIGHTS=${2:-imagenet}
RUN=${RUN:-runs/pretrained_flickr8k}
PACKAGE=${PACKAGE:-pretrained/flickr8k_mobilenet_v2}
PYTHON=${PYTHON:-.venv/bin/python}

# 1. Features and cross-entropy training (the defaults). Skipped once self-critical training has
#    started: it keeps the cross-entropy model as model_xe.keras.
if [ ! -f "$RUN/model_xe.keras" ]; then
    "$PYTHON" train.py --data_dir "$DATA" --encoder mobilenet_v2 --weights "$WEIGHTS" --run_dir "$RUN" --resume
fi
# 2. Self-critical training of the same run: 12 epochs, then continued to at most 24, stopped after 3
#    epochs without a better greedy dev CIDEr-D (the default --scst_patience). Two calls, because the
#    package was made that way: a continued phase draws its samples from a generator seeded at the
#    epoch it resumes from, so one call of 24 epochs would draw other samples after epoch 12.
for epochs in 12 24; do
    "$PYTHON" train.py --data_dir "$DATA" --run_dir "$RUN" --objective scst --scst_learning_rate 1e-4 \
        --scst_epochs $epochs --resume
done
# 3. The package: float16 decoder (when the dev scores hold), vocabulary, metadata, encoder check.
"$PYTHON" package.py --run_dir "$RUN" --package_dir "$PACKAGE"
# 4. Its dev scores, from the package's own files (the images are encoded again).
for beam in 1 3; do
    "$PYTHON" evaluate.py --run_dir "$PACKAGE" --data_dir "$DATA" --weights "$WEIGHTS" --split dev --beam_size $beam
done
