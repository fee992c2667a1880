"""Time of `evaluate` on the demo test split, and the serving-signature latency it reports.

Uses the newest export in --run-dir; without one it first runs data/train/export on the demo
(`--epochs`, default 5, to keep that short). Prints the evaluation's wall time next to a plain
baseline: one call of the serving signature on the whole test split plus a numpy argmax (the
least work any evaluation does), so the ratio shows what metrics, latency sampling and the
SavedModel load cost on top.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=None, help="run dir with export/<version>/")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--latency-runs", type=int, default=50)
    args = ap.parse_args()

    import numpy as np

    from tfship.artifacts import latest_export
    from tfship.config import load_config
    from tfship.data import load_splits
    from tfship.evaluate import evaluate_saved_model
    from tfship.rundir import RunDir

    tmp = None
    if args.run_dir is None:
        tmp = tempfile.TemporaryDirectory()
        args.run_dir = f"{tmp.name}/run"
    cfg = load_config(ROOT / "pipeline.yaml", overrides=[f"train.epochs={args.epochs}"])
    run_dir = RunDir(Path(args.run_dir)).ensure()
    if not (run_dir.export.is_dir() and any(p.name.isdigit() for p in run_dir.export.iterdir())):
        from tfship.export import run_export
        from tfship.train import run_train

        t0 = time.perf_counter()
        run_train(cfg, run_dir)
        run_export(cfg, run_dir)
        print(
            f"(setup: trained {args.epochs} epochs + exported in {time.perf_counter() - t0:.1f} s)"
        )
    model = latest_export(run_dir.export)
    splits = load_splits(cfg)
    x, y = splits.x_test, splits.y_test

    import tensorflow as tf

    t0 = time.perf_counter()
    fn = tf.saved_model.load(str(model)).signatures["serving_default"]
    probabilities = fn(pixels=tf.constant(x["pixels"]))["probabilities"].numpy()
    acc = float((probabilities.argmax(1) == y).mean())
    baseline = time.perf_counter() - t0

    t0 = time.perf_counter()
    ev = evaluate_saved_model(
        model,
        x,
        y,
        task=cfg.task_obj,
        label_names=splits.label_names,
        schema=splits.schema,
        latency_runs=args.latency_runs,
    )
    total = time.perf_counter() - t0
    assert abs(ev.metrics["accuracy"] - acc) < 1e-9, "evaluate disagrees with the plain call"

    print(f"model {model} on {len(y)} test examples, {os.cpu_count()} CPU(s)")
    print(f"plain baseline (load + 1 signature call + argmax): {baseline:6.2f} s")
    print(
        f"evaluate_saved_model (all metrics + latency):     {total:6.2f} s  "
        f"({total / baseline:.1f}x baseline)"
    )
    print(
        f"  accuracy {ev.metrics['accuracy']:.4f}  macro F1 {ev.metrics['macro_f1']:.4f}  "
        f"loss {ev.metrics['loss']:.4f}"
    )
    for bs, lat in ev.latency_ms.items():
        per_ex = lat["p50"] / int(bs)
        print(
            f"  batch {bs:>2}: p50 {lat['p50']:7.2f} ms  p95 {lat['p95']:7.2f} ms  "
            f"mean {lat['mean']:7.2f} ms  ({per_ex:.3f} ms/example at p50, {lat['runs']} runs)"
        )
    lat = np.asarray([ev.latency_ms[b]["p95"] for b in ("1", "32")])
    print(f"  p95 batch 32 / batch 1: {lat[1] / lat[0]:.1f}x for 32x the examples")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
