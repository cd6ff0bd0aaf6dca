#!/usr/bin/env bash
# A package of three decoders on EfficientNet-Lite0: two more decoders trained by the default recipe
# (seeds 2 and 3, on the same features), packed with the shipped captioner's decoder into one package
# that captions as their ensemble (geometric mean), then scored on dev as rebuild.sh scores the
# shipped one:
#
#   recipes/lite0_ensemble.sh FLICKR8K_DIR
#
# Runs: runs/l0_s2 (extracts the features), runs/l0_s3 (--features_from runs/l0_s2); the
# package: $PACKAGE (default runs/lite0_ensemble_package). Run again after an interruption: every
# phase resumes, and a finished run is not trained again. About 45 min per run on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: recipes/lite0_ensemble.sh FLICKR8K_DIR}
PACKAGE=${PACKAGE:-runs/lite0_ensemble_package}
PYTHON=${PYTHON:-.venv/bin/python}

for seed in 2 3; do
    run="runs/l0_s$seed"
    source=()
    if [ "$seed" != 2 ] && [ ! -f "$run/metadata.json" ]; then source=(--features_from runs/l0_s2); fi
    resume=()
    if [ -f "$run/metadata.json" ]; then resume=(--resume); fi
    "$PYTHON" train.py --data_dir "$DATA" --run_dir "$run" --encoder efficientnet_lite0 --seed $seed \
        --objective xe+scst "${source[@]}" "${resume[@]}"
done
# The first folder must be a run (the package is scored on its stored dev features); a package may follow.
"$PYTHON" package.py --run_dir runs/l0_s2 runs/l0_s3 pretrained/flickr8k_efficientnet_lite0 \
    --package_dir "$PACKAGE"
for beam in 1 3; do
    for guide in none tags; do
        "$PYTHON" evaluate.py --run_dir "$PACKAGE" --data_dir "$DATA" --split dev --beam_size $beam --guide $guide
    done
done
