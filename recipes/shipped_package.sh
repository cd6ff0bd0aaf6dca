#!/usr/bin/env bash
# The recipe that made the shipped pretrained/flickr8k_mobilenet_v2 (2026-11-30), with the settings of
# that time spelled out, since train.py's defaults are now the fast recipe (pretrained/rebuild.sh):
# cross-entropy with batch 32, learning rate 5e-4 halved on plateaus, dropout 0.5, up to 20 epochs
# (it stopped after 14 and kept 9); then 12 self-critical epochs, continued to at most 24 (it stopped
# after 16 and kept 13). About an hour on a 2-core machine; BENCHMARKS.md, "Time to a model".
#
#   recipes/shipped_package.sh FLICKR8K_DIR [WEIGHTS]
#
# The run folder is $RUN (default runs/shipped_recipe), the package $PACKAGE (default
# runs/shipped_recipe_package); run again after an interruption, both phases resume.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: recipes/shipped_package.sh FLICKR8K_DIR [WEIGHTS]}
WEIGHTS=${2:-imagenet}
RUN=${RUN:-runs/shipped_recipe}
PACKAGE=${PACKAGE:-runs/shipped_recipe_package}
PYTHON=${PYTHON:-.venv/bin/python}
OLD_DEFAULTS=(--batch_size 32 --learning_rate 5e-4 --lr_schedule plateau --dropout 0.5)

if [ ! -f "$RUN/model_xe.keras" ]; then
    "$PYTHON" train.py --data_dir "$DATA" --encoder mobilenet_v2 --weights "$WEIGHTS" --run_dir "$RUN" \
        "${OLD_DEFAULTS[@]}" --epochs 20 --resume
fi
# Two calls, because the package was made that way: a continued phase draws its samples from a
# generator seeded at the epoch it resumes from, so one call of 24 epochs would draw other samples.
for epochs in 12 24; do
    "$PYTHON" train.py --data_dir "$DATA" --run_dir "$RUN" --objective scst --scst_learning_rate 1e-4 \
        --scst_batch_size 16 --lr_schedule plateau --scst_epochs $epochs --resume
done
"$PYTHON" package.py --run_dir "$RUN" --package_dir "$PACKAGE"
for beam in 1 3; do
    "$PYTHON" evaluate.py --run_dir "$PACKAGE" --data_dir "$DATA" --weights "$WEIGHTS" --split dev \
        --beam_size $beam --guide none
done
