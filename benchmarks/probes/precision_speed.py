"""Training steps per second of the default merge decoder in float32 and in Keras's mixed_bfloat16 policy,
each in its own child process (the policy is global), on real Flickr8k captions and random 1280-d features:

    python benchmarks/probes/precision_speed.py [BATCH ...]       # default: 32 128

bfloat16 products run fast only where the CPU has bfloat16 instructions (avx512_bf16 or AMX in lscpu's
flags); elsewhere TensorFlow converts to float32 and back around each product.
"""
import json
import os
import subprocess
import sys
import time

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(BENCHMARKS))
sys.path.insert(0, BENCHMARKS)


def child(policy: str, batch: int, steps: int = 60) -> dict:
    from config import Config, quiet_tensorflow

    quiet_tensorflow()
    import keras
    import numpy as np

    from benchmark import training_data
    from data_loader import caption_batches
    from model import build_merge_model, build_training_model, compile_model

    keras.mixed_precision.set_global_policy(policy)
    rng, vocabulary, _, rows, tokens = training_data(1500, 1280)
    features = rng.standard_normal((1500, 1280), dtype="float32")
    keras.utils.set_random_seed(0)
    model = build_merge_model(Config(), len(vocabulary), 1280)
    compile_model(model, 5e-4)
    training = build_training_model(model)
    batches = caption_batches(features, rows, tokens, batch, True, 0, flat_targets=True).repeat()
    training.fit(batches, steps_per_epoch=5, epochs=1, verbose=0)  # tracing
    started = time.perf_counter()
    history = training.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    return {"policy": policy, "batch": batch, "captions_per_s": round(steps * batch / seconds, 1),
            "loss": round(float(history.history["loss"][0]), 4), "finite": bool(np.isfinite(history.history["loss"][0]))}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
        return
    flags = open("/proc/cpuinfo", encoding="utf-8").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"bfloat16 instructions in /proc/cpuinfo: avx512_bf16 {'avx512_bf16' in flags}, "
          f"amx_bf16 {'amx_bf16' in flags}")
    for batch in [int(value) for value in sys.argv[1:]] or [32, 128]:
        for policy in ("float32", "mixed_bfloat16", "float32", "mixed_bfloat16"):  # alternating, twice
            output = subprocess.run([sys.executable, __file__, "--child", policy, str(batch)], capture_output=True,
                                    text=True, check=True).stdout
            print(output.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
