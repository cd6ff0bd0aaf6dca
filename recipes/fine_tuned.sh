#!/usr/bin/env bash
# The README's fine-tuned row, from the image folder to the scored model: the fast recipe's
# cross-entropy training, then the encoder's top 14 layers fine-tuned, then self-critical training.
#
#   recipes/fine_tuned.sh FLICKR8K_DIR [WEIGHTS]
#
# FLICKR8K_DIR: Flickr8k in the official or the Kaggle layout (docs/datasets.md). WEIGHTS: imagenet
# (default) or a local Keras weights file of MobileNetV2 without its top. The run folder is $RUN
# (default runs/recipe_fine_tuned); run again after an interruption, every phase resumes.
# Wall time and scores on a 2-core machine: BENCHMARKS.md, "Time to a model".
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: recipes/fine_tuned.sh FLICKR8K_DIR [WEIGHTS]}
WEIGHTS=${2:-imagenet}
RUN=${RUN:-runs/recipe_fine_tuned}
PYTHON=${PYTHON:-.venv/bin/python}
started=$(date +%s)

# 1. Features and cross-entropy training (train.py's defaults: the fast recipe). Skipped once fine-tuning
#    has started: it keeps the run as it was in $RUN/frozen_encoder.
if [ ! -d "$RUN/frozen_encoder" ]; then
    "$PYTHON" train.py --data_dir "$DATA" --encoder mobilenet_v2 --weights "$WEIGHTS" --run_dir "$RUN" --resume
fi
# 2. The encoder's top 14 layers fine-tuned with the decoder (4 epochs, the settings of docs/fine_tuning.md);
#    the run's features are then those of the fine-tuned encoder.
#    Skipped once self-critical training has started.
if [ ! -f "$RUN/training_state_scst.json" ]; then
    "$PYTHON" train.py --data_dir "$DATA" --run_dir "$RUN" --fine_tune_encoder --fine_tune_layers 14 \
        --encoder_learning_rate 1e-4 --fine_tune_learning_rate 2e-5 --resume
fi
# 3. Self-critical training on the fine-tuned features (the defaults, at the learning rate this row was measured with).
"$PYTHON" train.py --data_dir "$DATA" --run_dir "$RUN" --objective scst --scst_learning_rate 1e-4 --resume
echo "recipes/fine_tuned.sh: trained in $(( ($(date +%s) - started) / 60 )) min"
for beam in 1 3; do
    "$PYTHON" evaluate.py --run_dir "$RUN" --data_dir "$DATA" --split dev --beam_size $beam --guide none
done
