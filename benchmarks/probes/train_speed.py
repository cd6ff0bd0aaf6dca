"""One epoch of the default merge model on real Flickr8k captions and synthetic 4096-d features, in
captions per second (BENCHMARKS.md's oneDNN paragraph used 750 images, i.e. 3,750 captions). It fits
the captioner itself, output layer at every padded position (train.py fits
model.build_training_model instead; benchmark.py --stages train compares the two):

    python benchmarks/probes/train_speed.py ONEDNN JIT LENGTH_WINDOW BATCH [IMAGES]
    python benchmarks/probes/train_speed.py 1 0 0 32 750      # oneDNN on, no XLA, plain shuffle, batch 32
"""
import json
import os
import sys
import time

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["TF_ENABLE_ONEDNN_OPTS"] = sys.argv[1]
jit = {"auto": "auto", "0": False, "1": True}[sys.argv[2]]
window, batch = int(sys.argv[3]), int(sys.argv[4])
images = int(sys.argv[5]) if len(sys.argv) > 5 else 1500
BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(BENCHMARKS))
sys.path.insert(0, BENCHMARKS)

import keras  # noqa: E402

from benchmark import training_data  # noqa: E402
from config import Config  # noqa: E402
from data_loader import caption_batches  # noqa: E402
from model import build_merge_model  # noqa: E402

rng, vocabulary, length, rows, tokens = training_data(images, 4096)
features = rng.standard_normal((images, 4096), dtype="float32")
keras.utils.set_random_seed(0)
model = build_merge_model(Config(), len(vocabulary), 4096)
model.compile(optimizer=keras.optimizers.Adam(5e-4),
              loss=keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight"),
              weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], jit_compile=jit)
batches = caption_batches(features, rows, tokens, batch, True, 0, window)
model.fit(batches.take(3), epochs=1, verbose=0)  # warm-up: tracing
started = time.perf_counter()
history = model.fit(batches, epochs=1, verbose=0)
seconds = time.perf_counter() - started
print(json.dumps({"onednn": sys.argv[1], "jit": str(model.jit_compile), "window": window, "batch": batch,
                  "captions": len(rows), "seconds": round(seconds, 1), "per_s": round(len(rows) / seconds, 1),
                  "loss": round(history.history["loss"][0], 4), "vocabulary": len(vocabulary)}))
