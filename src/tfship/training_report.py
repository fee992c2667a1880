"""What training reports while it runs: the progress display, TensorBoard scalars and train.json.

Only the chief reports; the other workers get inert objects, so the loop needs no branches.
train.json is rewritten (atomically) after every epoch and when the run ends, preempted or
diverged, so it always describes the last completed epoch; docs/run-directory.md lists its fields.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfship.fsutil import atomic_write_json, read_json

log = logging.getLogger(__name__)


def crossed(step: int, steps: int, every: int) -> bool:
    """Whether the `steps` that ended at `step` passed a multiple of `every` (a compiled call
    runs several steps, so `step % every == 0` would miss most multiples)."""
    return step // every > (step - steps) // every


class Progress:
    """tqdm bar on a terminal, periodic log lines otherwise (train.progress)."""

    def __init__(self, mode: str, total: int, initial: int, every: int, enabled: bool) -> None:
        if not enabled or mode == "none":
            self.kind = "none"
        elif mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
            self.kind = "bar"
        else:
            self.kind = "log"
        self.total, self.every = total, every
        self._t0, self._s0 = time.perf_counter(), initial
        self._bar = None
        if self.kind == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", file=sys.stderr)

    def update(self, step: int, steps: int, epoch: int, metrics: dict[str, float]) -> None:
        """`steps` were just run, ending at `step`; shown when they cross a multiple of `every`.
        `metrics`: the epoch's running training metrics (loss and the task's summary)."""
        due = crossed(step, steps, self.every)
        if self._bar is not None:
            self._bar.update(steps)
            if due:
                self._bar.set_postfix(epoch=epoch, **{k: f"{v:.4f}" for k, v in metrics.items()})
        elif self.kind == "log" and (due or step == self.total):
            rate = (step - self._s0) / max(time.perf_counter() - self._t0, 1e-9)
            shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            log.info("step %d/%d epoch %d %s (%.1f steps/s)", step, self.total, epoch, shown, rate)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _scalar_metadata() -> Any:
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )


def _scalar(name: str, value: float) -> None:
    # tf.summary.scalar needs the tensorboard package at write time; this writes the same
    # scalar event (the "scalars" plugin's format) without it, so TensorBoard reads it as usual.
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=_scalar_metadata())


class TensorBoardLog:
    """Event files under `<run dir>/tensorboard/{train,validation}` (nothing when disabled)."""

    def __init__(self, root: Path, enabled: bool) -> None:
        self._train = self._val = None
        if enabled:
            self._train = tf.summary.create_file_writer(str(root / "train"))
            self._val = tf.summary.create_file_writer(str(root / "validation"))

    def step_loss(self, step: int, loss: float) -> None:
        if self._train is not None:
            with self._train.as_default(step=step):
                _scalar("loss", loss)

    def epoch(self, step: int, metrics: dict[str, float]) -> None:
        if self._train is None or self._val is None:
            return
        # Keras' TensorBoard callback names: epoch_<metric> in train/ and validation/.
        for name, value in metrics.items():
            writer = self._val if name.startswith("val_") else self._train
            with writer.as_default(step=step):
                _scalar(f"epoch_{name.removeprefix('val_')}", value)

    def flush(self) -> None:
        for writer in (self._train, self._val):
            if writer is not None:
                writer.flush()


@dataclass
class TrainReport:
    """train.json: the run's fixed facts, its running counters and the per-epoch history."""

    path: Path
    enabled: bool  # the chief writes; other workers only count
    strategy: str
    replicas: int
    workers: int
    per_replica_batch_size: int
    global_batch_size: int
    learning_rate: float
    total_steps: int
    steps_per_epoch: int
    epochs: int
    best_metric: str
    resumed_from_step: int | None = None
    resumed_optimizer_iterations: int | None = None
    status: str = "running"
    history: list[dict[str, Any]] = field(default_factory=list)
    steps_run: int = 0  # by this process (a resumed run counts from its restart)
    train_seconds: float = 0.0  # in training steps alone
    eval_seconds: float = 0.0
    t_start: float = field(default_factory=time.perf_counter)

    def keep_history_until(self, step: int) -> None:
        """On resume: the history of the epochs completed by `step`, from the last train.json."""
        if self.enabled and self.path.is_file():
            done = step // self.steps_per_epoch
            self.history = [
                h for h in read_json(self.path).get("history", []) if h["epoch"] <= done
            ]

    @property
    def steps_per_second(self) -> float:
        return self.steps_run / self.train_seconds if self.train_seconds else 0.0

    def write(self, *, step: int, optimizer_iterations: int, keeper: Any) -> None:
        """Rewrite train.json atomically; `keeper` is the run's TrainingCheckpoints."""
        if not self.enabled:
            return
        atomic_write_json(
            self.path,
            {
                "status": self.status,
                "strategy": self.strategy,
                "replicas": self.replicas,
                "workers": self.workers,
                "per_replica_batch_size": self.per_replica_batch_size,
                "global_batch_size": self.global_batch_size,
                "learning_rate": self.learning_rate,
                "steps": step,
                "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch,
                "epochs": self.epochs,
                "epochs_completed": len(self.history),
                "steps_per_second": self.steps_per_second,
                "resumed_from_step": self.resumed_from_step,
                "resumed_optimizer_iterations": self.resumed_optimizer_iterations,
                "optimizer_iterations": optimizer_iterations,
                "best": {
                    "step": keeper.best_step,
                    "metric": self.best_metric,
                    "value": keeper.best_value,
                },
                "checkpoints": {
                    "dir": str(keeper.directory),  # this run's own (tfship.rundir.checkpoint_dir)
                    "run_id": keeper.run_id,
                    "saves": keeper.saves,
                    "seconds": keeper.save_seconds,  # what the loop waited for
                    "write_seconds": keeper.write_seconds,
                },
                "wall_seconds": {
                    "total": time.perf_counter() - self.t_start,
                    "training": self.train_seconds,
                    "evaluation": self.eval_seconds,
                },
                "history": self.history,
            },
        )
