"""tfship's pipeline overhead against the plain-Keras floor, and a large model's export-to-publish.

1. The TFX-peer task (digits, Dense 64-64-10, 20 epochs, batch 32), alternating `--rounds`
   times: a plain Keras script (`fit` -> `evaluate` -> `model.export`), `tfship run --skip
   scan` (train -> export -> evaluate/gate -> publish) and `tfship run` (with the Trivy
   scans). Each in a fresh process, as a user runs it; prints medians and ratios against the
   floor (targets: <= 1.3x without scans, <= 1.5x with) and `tfship run`'s own stage times.
2. A large model (a SavedModel of >= 300 MB: wide dense layers): the time from the end of
   training to "published" (`tfship export` + `tfship deploy`) against one plain
   `tf.saved_model.load` + one predict of the same export (target <= 2x), alternating
   `--large-rounds` times; medians.

    python benchmarks/pipeline_vs_floor.py [--rounds 5] [--large-rounds 3]
        [--skip-large | --skip-small]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", PYTHONPATH=str(ROOT))
for marker in ("CI", "GITLAB_CI", "GITHUB_ACTIONS", "CI_JOB_ID", "GITHUB_RUN_ID"):
    ENV.pop(marker, None)

EPOCHS, BATCH = 20, 32


def dense_64_64(input_shape, num_classes, *, width: int = 64, depth: int = 2):
    """The TFX-peer model: raw pixels rescaled, flattened, `depth` x Dense(width), logits."""
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    for i in range(depth):
        x = keras.layers.Dense(width, activation="relu", name=f"dense{i + 1}")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x))


FLOOR = f"""
import numpy as np, keras, sys
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
sys.path.insert(0, {str(ROOT)!r})
from benchmarks.pipeline_vs_floor import dense_64_64
d = load_digits()
x = (d.images.astype("float32") * (255.0 / 16.0)).round()[..., None]
x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.3, random_state=42)
keras.utils.set_random_seed(42)
m = dense_64_64((8, 8, 1), 10)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
m.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
m.fit(x_tr, y_tr, epochs={EPOCHS}, batch_size={BATCH}, verbose=0)
m.evaluate(x_te, y_te, verbose=0)
m.export(sys.argv[1], verbose=False)
"""

CONFIG = f"""
version: 1
project: {{name: bench, model_name: bench}}
model: {{builder: "benchmarks.pipeline_vs_floor:dense_64_64"}}
train: {{epochs: {EPOCHS}, per_replica_batch_size: {BATCH}, progress: none}}
gate: {{absolute: {{accuracy: {{min: 0.9}}}}}}
"""


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return took, proc


def tfship(work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tfship", *args, "--config", str(work / "pipeline.yaml")]


def pipeline_vs_floor(rounds: int, work: Path) -> None:
    (work / "pipeline.yaml").write_text(CONFIG)
    cases: dict[str, list[float]] = {
        "plain Keras": [],
        "tfship run --skip scan": [],
        "tfship run": [],
    }
    stages: dict[str, list[float]] = {}
    for r in range(rounds):
        took, _ = timed([sys.executable, "-c", FLOOR, str(work / f"keras-{r}")], ROOT)
        cases["plain Keras"].append(took)
        for name, extra in (("tfship run --skip scan", ["--skip", "scan"]), ("tfship run", [])):
            run = work / f"run-{r}-{len(extra)}"
            sets = ["--set", f"serving.model_repository={run}/models"]
            cmd = [*tfship(work, "run"), *extra, "--run-dir", str(run), "--output", "json", *sets]
            took, proc = timed(cmd, ROOT)
            cases[name].append(took)
            if not extra:
                for s in json.loads(proc.stdout)["stages"]:
                    stages.setdefault(s["name"], []).append(s["seconds"])
    floor = statistics.median(cases["plain Keras"])
    print(f"digits, Dense 64-64-10, {EPOCHS} epochs, batch {BATCH}; {rounds} alternating rounds")
    print(f"{'what':<26} {'median wall':>12} {'vs plain Keras':>15}  runs")
    for name, values in cases.items():
        med = statistics.median(values)
        runs = " ".join(f"{v:.1f}" for v in values)
        print(f"{name:<26} {med:>10.1f} s {med / floor:>14.2f}x  {runs}")
    print(
        "tfship run, median stage seconds: "
        + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in stages.items())
    )


LARGE = """
version: 1
project: {name: large, model_name: large}
model: {builder: "benchmarks.pipeline_vs_floor:dense_64_64", options: {width: 9216, depth: 2}}
train: {epochs: 1, max_steps: 2, per_replica_batch_size: 32, progress: none}
checkpoint: {every_steps: 1000, keep: 2}
export: {golden_requests: 4, warmup_requests: 4}
"""

LOAD_PREDICT = """
import sys, time, numpy as np, tensorflow as tf
t0 = time.perf_counter()
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
fn(pixels=tf.constant(np.zeros((1, 8, 8, 1), np.float32)))
print(time.perf_counter() - t0)
"""


def large_model(work: Path, rounds: int) -> None:
    """`rounds` alternating (export + deploy, plain load + predict) on one trained run."""
    import shutil

    (work / "pipeline.yaml").write_text(LARGE)
    run = work / "large-run"
    timed([*tfship(work, "train"), "--run-dir", str(run)], ROOT)
    # What a deploy needs from the gate: this run is a benchmark, not a model to ship.
    sets = ["--set", f"serving.model_repository={run}/models", "--allow-ungated"]
    times: dict[str, list[float]] = {"export": [], "deploy": [], "plain": [], "in_tf": []}
    size = 0.0
    for _ in range(rounds):
        for old in ("export", "models"):  # each round exports and publishes anew
            shutil.rmtree(run / old, ignore_errors=True)
        t_export, _ = timed([*tfship(work, "export"), "--run-dir", str(run)], ROOT)
        (export,) = [p for p in (run / "export").iterdir() if p.is_dir() and p.name.isdigit()]
        size = sum(f.stat().st_size for f in export.rglob("*") if f.is_file()) / 2**20
        t_deploy, _ = timed([*tfship(work, "deploy"), "--run-dir", str(run), *sets], ROOT)
        t_plain, proc = timed([sys.executable, "-c", LOAD_PREDICT, str(export)], ROOT)
        times["export"].append(t_export)
        times["deploy"].append(t_deploy)
        times["plain"].append(t_plain)
        times["in_tf"].append(float(proc.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(v) for k, v in times.items()}
    totals = [e + d for e, d in zip(times["export"], times["deploy"], strict=True)]
    total = statistics.median(totals)
    print(f"\nlarge model: SavedModel {size:.0f} MiB; {rounds} alternating rounds, medians")
    print(
        f"  tfship export {med['export']:.1f} s + tfship deploy {med['deploy']:.1f} s = "
        f"{total:.1f} s  (totals: {' '.join(f'{t:.1f}' for t in totals)})"
    )
    print(
        f"  plain load + predict: {med['plain']:.1f} s as a process ({med['in_tf']:.1f} s of it "
        f"in TensorFlow; runs: {' '.join(f'{t:.1f}' for t in times['plain'])}); "
        f"ratio {total / med['plain']:.2f}x (target <= 2x)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--skip-large", action="store_true", help="only the digits pipeline")
    which.add_argument("--skip-small", action="store_true", help="only the large model")
    ap.add_argument("--large-rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tfship-bench-") as tmp:
        if not args.skip_small:
            pipeline_vs_floor(args.rounds, Path(tmp))
        if not args.skip_large:
            large_model(Path(tmp), args.large_rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
