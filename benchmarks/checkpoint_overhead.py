"""Checkpoint overhead: the same training with a checkpoint every epoch vs none (target <= 5 %).

The default CNN on the demo digits, in one process; what differs is `checkpoint.every_steps`
(one epoch's steps vs unset). Both runs still validate each epoch, keep the best checkpoint and
save once at the end, as every tfship run does, so the difference is the periodic saves alone.
Figures: the median over alternating rounds of `run_train`'s wall time (TF import and data
loading excluded), and the time the training loop itself spent blocked in checkpoint saves
(writes run on a background thread; the loop pays for the host copy of the variables). On a
shared, busy machine the wall-time medians are noisy; the blocked time is not.

    make bench, or: TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python benchmarks/checkpoint_overhead.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tfship.config import PipelineConfig
from tfship.data import load_splits
from tfship.rundir import RunDir
from tfship.train import run_train


def timed_run(cfg: PipelineConfig, splits) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_train(cfg, RunDir(Path(tmp)), splits=splits)
        seconds = time.perf_counter() - t0
        record = json.loads((Path(tmp) / "train.json").read_text())
    return seconds, record["checkpoints"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    base = {"train": {"epochs": args.epochs, "progress": "none"}}
    none_cfg = PipelineConfig.model_validate({**base, "checkpoint": {"every_steps": None}})
    splits = load_splits(none_cfg)
    steps_per_epoch = len(splits.y_train) // none_cfg.train.per_replica_batch_size
    every_cfg = PipelineConfig.model_validate(
        {**base, "checkpoint": {"every_steps": steps_per_epoch}}
    )
    timed_run(none_cfg, splits)  # warm-up: first-use costs (tracing caches, file system)
    without, with_saves, blocked, saves = [], [], [], {}
    for r in range(args.rounds):
        # Alternate which configuration goes first, so a load spike hurts both alike.
        order = [(none_cfg, without), (every_cfg, with_saves)][:: 1 if r % 2 == 0 else -1]
        for cfg, sink in order:
            seconds, record = timed_run(cfg, splits)
            sink.append(seconds)
            if cfg is every_cfg:
                saves = record
            else:
                blocked.append(record["seconds"])
        blocked[-1] = saves["seconds"] - blocked[-1]
        print(
            f"round {r + 1}: no periodic saves {without[-1]:.2f} s, every epoch "
            f"{with_saves[-1]:.2f} s (loop blocked {blocked[-1]:.3f} s more)"
        )
    a, b = statistics.median(without), statistics.median(with_saves)
    overhead = 100.0 * (b - a) / a
    blocked_pct = 100.0 * statistics.median(blocked) / a
    print(
        f"no periodic saves: {a:.2f} s | a checkpoint every epoch ({saves['saves']} saves, "
        f"{saves['write_seconds']:.2f} s writing in the background): {b:.2f} s | wall-time "
        f"overhead {overhead:+.1f} %, loop blocked by saves {blocked_pct:+.1f} % "
        f"(target <= 5 %: {'met' if max(overhead, blocked_pct) <= 5.0 else 'NOT met'})"
    )
    print(f"({args.epochs} epochs x {steps_per_epoch} steps, median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
