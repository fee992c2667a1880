"""The worked examples (and the digits demo): `tfship run` against the plain Keras script a user
would write for the same model, data and epochs.

Per example, two figures:

* wall time: `tfship run --config <yaml> --skip scan` (data, train, export with its checks,
  evaluate and gate, offline deploy) against a plain script doing load -> fit -> evaluate ->
  `model.export`. Both run as fresh subprocesses, so both pay the TensorFlow import; the ratio
  is what the pipeline's extra work (checkpoints, golden requests, latency, gate) costs.
* training throughput: steps/s of tfship's loop (train.json `steps_per_second`, the training
  steps alone, first epoch included) against `model.fit` (the same: each epoch's time from
  its start to its last train batch, validation left out), and the same two figures without
  the first (tracing) epoch. Target: tfship >= 0.95 x `model.fit`. The baseline is `fit` as a
  user writes it (steps_per_execution=1); tfship runs `train.steps_per_execution` steps per
  compiled call (default 10), which is most of its lead on these small models.

The Keras side builds the very same model (`tfship.model.build_model` on
`ModelSpec.from_splits`), on the same splits (`tfship.data.load_splits`), the same tf.data
pipeline (`tfship.data.make_dataset`, full shuffled batches, as tfship trains), the task's
loss (with the default batch-mean reduction), Adam at `train.learning_rate`, the task's class
weights, `train.epochs` and `train.per_replica_batch_size`; no XLA on either side.

    TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python benchmarks/examples_vs_keras.py
        [--only fraud intent] [--rounds 1]
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "fraud": ROOT / "examples/fraud/pipeline.yaml",
    "intent": ROOT / "examples/intent/pipeline.yaml",
    "regression": ROOT / "examples/regression/pipeline.yaml",
    "digits": ROOT / "pipeline.yaml",
}
TARGET = 0.95


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFSHIP_")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}


def _timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
    return seconds, proc


def run_tfship(config: Path, work: Path) -> dict[str, float]:
    """`tfship run` in a subprocess; its wall time and train.json's throughput."""
    run_dir = work / "run"
    seconds, _ = _timed(
        [
            *(sys.executable, "-m", "tfship", "run", "--config", str(config)),
            *("--skip", "scan", "--run-dir", str(run_dir)),
            # Publish into the scratch directory, never into the example's model repository.
            *("--set", f"serving.model_repository={work / 'models'}"),
        ]
    )
    train = json.loads((run_dir / "train.json").read_text())
    steady = train["history"][1:]
    return {
        "wall": seconds,
        "steps_per_second": float(train["steps_per_second"]),
        "steady_steps_per_second": (
            sum(h["steps"] for h in steady) / sum(h["step_seconds"] for h in steady)
            if steady
            else float("nan")
        ),
    }


def run_keras(config: Path, work: Path) -> dict[str, float]:
    """This script's `--keras` mode in a subprocess: wall time and what it measured."""
    seconds, proc = _timed(
        [sys.executable, str(Path(__file__).resolve()), "--keras", str(config), str(work)]
    )
    return {"wall": seconds, **json.loads(proc.stdout.strip().splitlines()[-1])}


def keras_baseline(config: Path, work: Path) -> dict[str, float]:
    """The plain Keras script: load -> fit -> evaluate -> export. Returns its throughput."""
    import keras

    from tfship.config import load_config
    from tfship.data import load_splits, make_dataset
    from tfship.model import ModelSpec, build_model

    cfg = load_config(config, overrides=[f"serving.model_repository={work / 'models'}"])
    task, tcfg = cfg.task_obj, cfg.train
    splits = load_splits(cfg)
    keras.utils.set_random_seed(cfg.run.seed)
    model = build_model(cfg.model, ModelSpec.from_splits(task, splits))
    # The task's loss with Keras' default reduction (tfship's loop reduces it itself).
    loss = task.keras_loss()
    loss = type(loss).from_config({**loss.get_config(), "reduction": "sum_over_batch_size"})
    model.compile(optimizer=keras.optimizers.Adam(tcfg.learning_rate), loss=loss, jit_compile=False)
    batch = tcfg.per_replica_batch_size

    def data(x: Any, y: Any, train: bool) -> Any:
        return make_dataset(
            x, y, global_batch_size=batch, shuffle=train, seed=cfg.run.seed,
            cache=cfg.data.cache, shuffle_buffer=cfg.data.shuffle_buffer,
            repeat=train, drop_remainder=train,
        )  # fmt: skip

    weights = task.class_weights(splits.y_train, splits.label_names)
    steps_per_epoch = max(1, len(splits.y_train) // batch)
    timer = _TrainBatchTimer()
    model.fit(
        data(splits.x_train, splits.y_train, True),
        validation_data=data(splits.x_val, splits.y_val, False),
        epochs=tcfg.epochs,
        steps_per_epoch=steps_per_epoch,
        class_weight=None if weights is None else dict(enumerate(weights.tolist())),
        callbacks=[timer],
        shuffle=False,  # the dataset shuffles, as tfship's does
        verbose=0,
    )
    test_loss = model.evaluate(data(splits.x_test, splits.y_test, False), verbose=0)
    model.export(str(work / "keras_export"), verbose=False)
    seconds = timer.seconds
    return {
        "steps_per_second": steps_per_epoch * len(seconds) / sum(seconds),
        "steady_steps_per_second": (
            steps_per_epoch * (len(seconds) - 1) / sum(seconds[1:])
            if len(seconds) > 1
            else float("nan")
        ),
        "test_loss": float(test_loss),
    }


def _timer_class() -> type:
    import keras

    class TrainBatchTimer(keras.callbacks.Callback):
        """Each epoch's training time: its start to its last train batch (no validation)."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t0 = self._last = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self._last = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(self._last - self._t0)

    return TrainBatchTimer


def _TrainBatchTimer() -> Any:
    return _timer_class()()


def _row(name: str, ours: list[dict], theirs: list[dict]) -> str:
    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    def ratio(key: str) -> float:
        return statistics.median(a[key] / b[key] for a, b in zip(ours, theirs, strict=True))

    thr = ratio("steps_per_second")
    return (
        f"{name:<11}{med(ours, 'wall'):>9.1f}{med(theirs, 'wall'):>9.1f}{ratio('wall'):>7.2f}"
        f"{med(ours, 'steps_per_second'):>11.1f}{med(theirs, 'steps_per_second'):>10.1f}"
        f"{thr:>7.3f} {'ok ' if thr >= TARGET else 'LOW'}"
        f"{med(ours, 'steady_steps_per_second'):>11.1f}"
        f"{med(theirs, 'steady_steps_per_second'):>10.1f}{ratio('steady_steps_per_second'):>7.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keras", nargs=2, metavar=("CONFIG", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.keras:
        print(json.dumps(keras_baseline(Path(args.keras[0]), Path(args.keras[1]))))
        return 0
    results: dict[str, tuple[list[dict], list[dict]]] = {n: ([], []) for n in args.only}
    for r in range(args.rounds):
        for name in args.only:
            with tempfile.TemporaryDirectory() as tmp:
                # Alternate which goes first, so a load spike does not always hit one side.
                order = [("tfship", run_tfship), ("keras", run_keras)]
                for side, fn in order if r % 2 == 0 else order[::-1]:
                    figures = fn(CONFIGS[name], Path(tmp) / side)
                    results[name][0 if side == "tfship" else 1].append(figures)
                    print(f"round {r + 1} {name} {side}: {json.dumps(figures)}", file=sys.stderr)
    print(
        f"{'example':<11}{'tfship s':>9}{'keras s':>9}{'ratio':>7}{'tfship/s':>11}{'fit/s':>10}"
        f"{'ratio':>7}    {'steady tf/s':>11}{'fit/s':>10}{'ratio':>7}"
    )
    for name, (ours, theirs) in results.items():
        print(_row(name, ours, theirs))
    print(
        f"(wall: whole subprocess incl. TF import; tfship runs --skip scan. steps/s: training "
        f"steps alone, target tfship >= {TARGET} x model.fit; steady: first epoch left out. "
        f"Medians of {args.rounds} round(s).)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
