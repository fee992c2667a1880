"""Training throughput: tfship's custom loop vs plain Keras `model.fit` (target ratio >= 0.95).

Same model (the default small CNN), same data (the demo digits, same tf.data pipeline from
tfship.data.make_dataset), same batch, same optimizer, single device, same process. Steady-state
steps/s: the first epoch (tracing) is left out of both, and only the training steps are timed
(tfship's per-epoch `step_seconds` in train.json; Keras' epoch time, run without validation).
Rounds alternate which goes first so a busy machine hurts both alike; the figures are medians
over rounds, and the ratio is the median of the per-round ratios (pairs run back to back).

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


def keras_fit_steps_per_second(cfg: PipelineConfig, splits) -> float:
    tcfg = cfg.train
    batch = tcfg.per_replica_batch_size
    steps_per_epoch = len(splits.y_train) // batch
    model = build_model(cfg.model, splits.input_shape, splits.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(tcfg.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,  # tfship's loop does not use XLA either
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
    ours, theirs = [], []
    for r in range(args.rounds):
        if r % 2 == 0:
            ours.append(tfship_steps_per_second(cfg, splits))
            theirs.append(keras_fit_steps_per_second(cfg, splits))
        else:
            theirs.append(keras_fit_steps_per_second(cfg, splits))
            ours.append(tfship_steps_per_second(cfg, splits))
        print(f"round {r + 1}: tfship {ours[-1]:.1f} steps/s, keras fit {theirs[-1]:.1f} steps/s")
    ratio = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    print(
        f"tfship loop: {statistics.median(ours):.1f} steps/s | keras model.fit: "
        f"{statistics.median(theirs):.1f} steps/s | ratio {ratio:.3f} "
        f"(target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})"
    )
    print(
        f"(batch {cfg.train.per_replica_batch_size}, {len(splits.y_train)} training examples, "
        f"{args.epochs} epochs, first epoch excluded, medians of {args.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
