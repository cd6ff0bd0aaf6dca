#!/usr/bin/env bash
# A long recipe on MobileNetV2 (about an hour on a 2-core machine; BENCHMARKS.md, "Time to a model"),
# with every setting spelled out: cross-entropy with batch 32, learning rate 5e-4 halved on plateaus,
# dropout 0.5, up to 20 epochs; then 12 self-critical epochs, continued to at most 24. Its model scored
# dev beam-3 CIDEr-D 0.5168 (2026-11-30, evaluate.py --split dev --beam_size 3 on its package, the last
# step below). The shipped captioner is built by pretrained/rebuild.sh instead (docs/pretrained.md).
#
#   recipes/mobilenet_v2_long.sh FLICKR8K_DIR [WEIGHTS]
#
# The run folder is $RUN (default runs/mobilenet_v2_long), the package $PACKAGE (default
# runs/mobilenet_v2_long_package); run again after an interruption, both phases resume.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: recipes/mobilenet_v2_long.sh FLICKR8K_DIR [WEIGHTS]}
WEIGHTS=${2:-imagenet}
RUN=${RUN:-runs/mobilenet_v2_long}
PACKAGE=${PACKAGE:-runs/mobilenet_v2_long_package}
PYTHON=${PYTHON:-.venv/bin/python}
LONG_RECIPE=(--batch_size 32 --learning_rate 5e-4 --lr_schedule plateau --dropout 0.5)

if [ ! -f "$RUN/model_xe.keras" ]; then
    "$PYTHON" train.py --data_dir "$DATA" --encoder mobilenet_v2 --weights "$WEIGHTS" --run_dir "$RUN" \
        "${LONG_RECIPE[@]}" --epochs 20 --resume
fi
# Two calls, as the reference run was made: 12 self-critical epochs, then continued to at most 24.
for epochs in 12 24; do
    "$PYTHON" train.py --data_dir "$DATA" --run_dir "$RUN" --objective scst --scst_learning_rate 1e-4 \
        --scst_batch_size 16 --lr_schedule plateau --scst_epochs $epochs --resume
done
"$PYTHON" package.py --run_dir "$RUN" --package_dir "$PACKAGE"
for beam in 1 3; do
    "$PYTHON" evaluate.py --run_dir "$PACKAGE" --data_dir "$DATA" --weights "$WEIGHTS" --split dev \
        --beam_size $beam --guide none
done
