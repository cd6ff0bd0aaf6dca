#!/usr/bin/env bash
# Sets up a virtual environment, then runs the whole pipeline on the bundled sample:
# preprocess + train (train.py runs preprocess itself), evaluate on the test split, caption one image;
# then the pretrained captioner on one of its reference photos (it needs MobileNetV2's ImageNet weights).
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
.venv/bin/python predict.py --image_path pretrained/flickr8k_mobilenet_v2/encoder_check/3393035454_2d2370ffd4.jpg \
    || echo "(the pretrained captioner needs MobileNetV2's ImageNet weights and class names: online they download" \
            "by themselves; offline add --weights PATH, and --class_names PATH or --guide none)"
