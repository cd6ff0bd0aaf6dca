"""preprocess.py end to end with each extraction runtime (`--extract_with tensorflow|litert`), side by side:
the same images into new run folders, alternating, each command a process of its own; its wall time
(start-up, the LiteRT conversion and image decoding included) and how close the two stores' features are.

    python benchmarks/probes/extract_with.py WEIGHTS [LIMIT] [PASSES]   # default: --limit 1000, 2 passes

`--limit N` keeps the first N images of each split (on the shared Flickr8k: N training and N dev images).
"""
import os
import subprocess
import sys
import tempfile
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, PROJECT)

from config import quiet_tensorflow, run_script  # noqa: E402

quiet_tensorflow()

import numpy as np  # noqa: E402

from inputs.feature_store import open_features  # noqa: E402
from inputs.json_files import read_json  # noqa: E402
from inputs.run_folder import METADATA  # noqa: E402
from serving.encoder_check import cosine_similarities  # noqa: E402

SHARED = os.path.join(os.path.dirname(PROJECT), "shared", "data", "flickr8k")
RUNTIMES = ("tensorflow", "litert")


def preprocess(run_dir: str, weights: str, limit: int, runtime: str) -> float:
    command = [sys.executable, "preprocess.py", "--data_dir", SHARED, "--run_dir", run_dir, "--encoder",
               "mobilenet_v2", "--weights", weights, "--limit", str(limit), "--extract_with", runtime]
    started = time.perf_counter()
    subprocess.run(command, cwd=PROJECT, check=True, capture_output=True)
    return time.perf_counter() - started


def features_by_name(run_dir: str) -> dict:
    matrix, rows = open_features(run_dir, read_json(os.path.join(run_dir, METADATA)))
    return {name: matrix[row] for name, row in rows.items()}


def main() -> None:
    weights = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    passes = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    seconds = {runtime: [] for runtime in RUNTIMES}
    print(f"# load average {os.getloadavg()[0]:.2f} at the start")
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(passes):
            for runtime in RUNTIMES:
                run_dir = os.path.join(scratch, f"{runtime}_{index}")
                seconds[runtime].append(preprocess(run_dir, weights, limit, runtime))
        first = {runtime: features_by_name(os.path.join(scratch, f"{runtime}_0")) for runtime in RUNTIMES}
    names = sorted(first["tensorflow"])
    if sorted(first["litert"]) != names:
        raise SystemExit("the two runtimes stored different images")
    cosines = cosine_similarities(np.stack([first["tensorflow"][name] for name in names]),
                                  np.stack([first["litert"][name] for name in names]))
    print(f"preprocess.py --limit {limit}: {len(names)} images, {passes} alternating passes per runtime")
    for runtime in RUNTIMES:
        print(f"  {runtime:10s} best {min(seconds[runtime]):6.1f} s  {len(names) / min(seconds[runtime]):6.1f} "
              f"images/s  (passes {', '.join(f'{value:.1f}' for value in seconds[runtime])} s)")
    print(f"  litert against tensorflow: {min(seconds['tensorflow']) / min(seconds['litert']):.2f}x; feature cosine "
          f"mean {cosines.mean():.6f}, min {cosines.min():.6f}")


if __name__ == "__main__":
    run_script(main)
