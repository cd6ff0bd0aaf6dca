#!/usr/bin/env bash
# Builds a package like pretrained/flickr8k_mobilenet_v2 from Flickr8k with one command, by train.py's
# default recipe (the fast recipe: docs/training.md, "The recipe"), then scores it on dev:
#
#   pretrained/rebuild.sh FLICKR8K_DIR [WEIGHTS]
#
# FLICKR8K_DIR: Flickr8k in the official or the Kaggle layout (docs/datasets.md).
# WEIGHTS: imagenet (default; Keras downloads MobileNetV2's weights once) or a local Keras weights
# file of MobileNetV2 without its top. The run folder is runs/pretrained_flickr8k ($RUN); an
# interrupted rebuild continues where it stopped when run again (both training phases resume).
# $PACKAGE (default runs/pretrained_flickr8k_package) is where the package is written; give
# PACKAGE=pretrained/flickr8k_mobilenet_v2 to replace the shipped one. The shipped package itself
# was made by an older, slower recipe: recipes/shipped_package.sh (docs/pretrained.md).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: pretrained/rebuild.sh FLICKR8K_DIR [WEIGHTS]}
WEIGHTS=${2:-imagenet}
RUN=${RUN:-runs/pretrained_flickr8k}
PACKAGE=${PACKAGE:-runs/pretrained_flickr8k_package}
PYTHON=${PYTHON:-.venv/bin/python}

# 1. Features (the encoder run by LiteRT: the same features, sooner), cross-entropy training, then
#    self-critical training of the same run: one command.
"$PYTHON" train.py --data_dir "$DATA" --encoder mobilenet_v2 --weights "$WEIGHTS" --run_dir "$RUN" \
    --extract_with litert --objective xe+scst --resume
# 2. The package: float16 decoder (when the dev scores hold), vocabulary, metadata, encoder check.
"$PYTHON" package.py --run_dir "$RUN" --package_dir "$PACKAGE"
# 3. Its dev scores, from the package's own files (the images are encoded again), unguided and guided.
for beam in 1 3; do
    for guide in none tags; do
        "$PYTHON" evaluate.py --run_dir "$PACKAGE" --data_dir "$DATA" --weights "$WEIGHTS" --split dev \
            --beam_size $beam --guide $guide
    done
done
