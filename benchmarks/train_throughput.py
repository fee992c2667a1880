"""Training throughput: tfship's custom loop vs plain Keras `model.fit` (target ratio >= 0.95).

Same model (the default small CNN), same data (the demo digits, same tf.data pipeline from
tfship.data.make_dataset), same batch, same optimizer, single device, same process. Steady-state
steps/s: the first epoch (tracing) is left out of both, and only the training steps are timed
(tfship's per-epoch `step_seconds` in train.json; Keras' epoch time, run without validation).
Rounds alternate which goes first so a busy machine hurts both alike; the figures are medians
over rounds, and the ratio is the median of the per-round ratios (pairs run back to back).

The baseline is `model.fit` as a user writes it (steps_per_execution=1). tfship runs
`train.steps_per_execution` steps per compiled call (default 10), so the same figure is also
given against `model.fit(steps_per_execution=<same>)`: the like-for-like comparison of the loop.

    make bench, or: TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python benchmarks/train_throughput.py
        [--epochs 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import keras

from tfship.config import PipelineConfig
from tfship.data import load_splits, make_dataset
from tfship.model import build_model
from tfship.rundir import RunDir
from tfship.train import run_train


def tfship_steps_per_second(cfg: PipelineConfig, splits) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run_train(cfg, RunDir(Path(tmp)), splits=splits)
        history = json.loads((Path(tmp) / "train.json").read_text())["history"][1:]
    return sum(h["steps"] for h in history) / sum(h["step_seconds"] for h in history)


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t0)


def keras_fit_steps_per_second(cfg: PipelineConfig, splits, steps_per_execution: int = 1) -> float:
    tcfg = cfg.train
    batch = tcfg.per_replica_batch_size
    steps_per_epoch = len(splits.y_train) // batch
    model = build_model(cfg.model, splits.input_shape, splits.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(tcfg.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,  # tfship's loop does not use XLA either
        steps_per_execution=steps_per_execution,
    )
    data = make_dataset(
        splits.x_train,
        splits.y_train,
        global_batch_size=batch,
        shuffle=True,
        seed=cfg.run.seed,
        cache=True,
        repeat=True,
        drop_remainder=True,
    )
    timer = _EpochTimer()
    model.fit(
        data,
        epochs=tcfg.epochs,
        steps_per_epoch=steps_per_epoch,
        verbose=0,
        shuffle=False,
        callbacks=[timer],
    )
    return steps_per_epoch * (len(timer.seconds) - 1) / sum(timer.seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cfg = PipelineConfig.model_validate(
        {
            "train": {"epochs": args.epochs, "progress": "none"},
            "checkpoint": {"every_steps": None},
        }
    )
    splits = load_splits(cfg)
    spe = cfg.train.steps_per_execution
    runs = {
        "tfship": lambda: tfship_steps_per_second(cfg, splits),
        "fit": lambda: keras_fit_steps_per_second(cfg, splits),
        f"fit(steps_per_execution={spe})": lambda: keras_fit_steps_per_second(cfg, splits, spe),
    }
    figures: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        # Rotate the order so a load spike does not always hit the same one.
        names = list(runs)[r % len(runs) :] + list(runs)[: r % len(runs)]
        for name in names:
            figures[name].append(runs[name]())
        print(f"round {r + 1}: " + ", ".join(f"{n} {figures[n][-1]:.1f}" for n in runs))
    ours = figures["tfship"]
    for name in list(runs)[1:]:
        ratio = statistics.median(a / b for a, b in zip(ours, figures[name], strict=True))
        met = "met" if ratio >= 0.95 else "NOT met"
        target = f" (target >= 0.95: {met})" if name == "fit" else ""
        print(
            f"tfship loop {statistics.median(ours):.1f} steps/s | keras model.{name} "
            f"{statistics.median(figures[name]):.1f} steps/s | ratio {ratio:.3f}{target}"
        )
    print(
        f"(batch {cfg.train.per_replica_batch_size}, {len(splits.y_train)} training examples, "
        f"{args.epochs} epochs, first epoch excluded, tfship steps_per_execution {spe}, "
        f"medians of {args.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
