#!/usr/bin/env bash
# The README's ensemble row, from the image folder to the scored ensemble: recipes/fine_tuned.sh's
# run, then three more decoders (seeds 7, 11 and 5, the last with 512 units) trained by the fast
# recipe (self-critical at 1e-4, as this row was measured) on its fine-tuned encoder's features,
# scored together with beam 3.
#
#   recipes/ensemble.sh FLICKR8K_DIR [WEIGHTS]
#
# The runs are $RUN (default runs/recipe_fine_tuned, made first when missing) and $RUN_s7, $RUN_s11,
# $RUN_s5; run again after an interruption, every phase resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: recipes/ensemble.sh FLICKR8K_DIR [WEIGHTS]}
WEIGHTS=${2:-imagenet}
export RUN=${RUN:-runs/recipe_fine_tuned}
PYTHON=${PYTHON:-.venv/bin/python}
started=$(date +%s)

recipes/fine_tuned.sh "$DATA" "$WEIGHTS"
members=("$RUN")
for seed in 7 11 5; do
    member="${RUN}_s$seed"
    sizes=()
    if [ "$seed" = 5 ]; then sizes=(--embedding_dim 512 --units 512); fi
    if [ ! -f "$member/metadata.json" ]; then
        "$PYTHON" train.py --data_dir "$DATA" --run_dir "$member" --features_from "$RUN" --seed $seed \
            "${sizes[@]}" --objective xe+scst --scst_learning_rate 1e-4
    else
        "$PYTHON" train.py --data_dir "$DATA" --run_dir "$member" --seed $seed "${sizes[@]}" \
            --objective xe+scst --scst_learning_rate 1e-4 --resume
    fi
    members+=("$member")
done
echo "recipes/ensemble.sh: trained in $(( ($(date +%s) - started) / 60 )) min"
"$PYTHON" evaluate.py --run_dir "${members[@]}" --data_dir "$DATA" --split dev --beam_size 3 --guide none
