"""Training stage: one custom loop for the default, Mirrored and MultiWorkerMirrored strategies.

Every step is a full global batch (per-replica batch × replicas, repeated data), so all workers
run the same number of steps and `tf.nn.compute_average_loss` divides by the same number. Steps
run `train.steps_per_execution` at a time in one compiled call, whose ends every worker computes
alike (never past an epoch end or a periodic checkpoint). Host flags (SIGTERM received,
time-based checkpoint due) travel through each call as a tiny all-reduce, so under
MultiWorkerMirroredStrategy every worker takes the same save/stop decision at the same step:
saves involve every worker, and a worker that acted alone would hang the others. A flag raised
during a call is acted on after the next one (at most 2 × steps_per_execution steps later).
"""

from __future__ import annotations

import hashlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from tfship.checkpoints import TrainingCheckpoints, guard_record
from tfship.cluster import cluster_size, is_chief
from tfship.config import PipelineConfig, dump_config
from tfship.distribute import configure_devices, make_strategy
from tfship.distribute import strategy_name as _strategy_name
from tfship.errors import ConfigError, InfraError, Preempted, TrainingDiverged
from tfship.rundir import RunDir
from tfship.train_steps import build_steps, chunk_end, distributed_inputs, make_optimizer
from tfship.training_report import Progress, TensorBoardLog, TrainReport, crossed

if TYPE_CHECKING:
    from tfship.backup import BackupAgent, TrainingBackup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What `tfship train` did; train.json in the run directory holds the same and the history."""

    run_dir: str
    strategy: str
    replicas: int
    workers: int
    global_batch_size: int
    steps: int
    total_steps: int
    epochs_completed: int
    steps_per_second: float
    resumed_from_step: int | None
    resumed_optimizer_iterations: int | None
    optimizer_iterations: int
    metrics: dict[str, float]
    best_step: int | None
    best_metric: str
    best_value: float | None
    checkpoint: str | None
    weights_sha256: str
    chief: bool
    wall_seconds: float
    history: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    def render_text(self) -> str:
        resumed = (
            f", resumed from step {self.resumed_from_step}"
            if self.resumed_from_step is not None
            else ""
        )
        m = self.metrics
        shown = "  ".join(f"{k} {v:.4f}" for k, v in m.items())
        best = (
            f"  best {self.best_metric} {self.best_value:.4f} at step {self.best_step}\n"
            if self.best_value is not None
            else ""
        )
        return (
            f"train: {self.steps}/{self.total_steps} steps, {self.epochs_completed} epoch(s), "
            f"{self.strategy} x{self.replicas} (global batch {self.global_batch_size}){resumed}\n"
            f"  {shown}\n"
            f"{best}"
            f"  {self.steps_per_second:.1f} steps/s, {self.wall_seconds:.1f} s wall\n"
            + (
                f"  checkpoint {self.checkpoint}\n  wrote {Path(self.run_dir) / 'train.json'}"
                if self.chief
                else "  not the chief: checkpoints and train.json are the chief's to write"
            )
        )


class _SigtermFlag:
    """Sets a flag on SIGTERM instead of dying, so the loop can save first (main thread only)."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: Any = None

    def __enter__(self) -> _SigtermFlag:
        self._installed = threading.current_thread() is threading.main_thread()
        if self._installed:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.raised = True

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            previous = self._previous if self._previous is not None else signal.SIG_DFL
            signal.signal(signal.SIGTERM, previous)


def _require_one_start_step(strategy: Any, start_step: int) -> None:
    """Every worker must start from the same step, or the first collective they disagree on
    (an epoch end, a save) waits forever on both. A worker whose checkpoint directory is its
    own disk finds none and starts at 0 while the chief resumes. Every replica's start step is
    gathered to every worker (float64: exact below 2**53, and a dtype every collective
    implementation takes), so all see the same list and stop together."""
    local = tf.constant([start_step], dtype=tf.float64)
    gathered = strategy.gather(strategy.run(lambda: tf.identity(local)), axis=0)
    steps = [int(s) for s in gathered.numpy().tolist()]
    if len(set(steps)) > 1:
        raise ConfigError(
            f"this worker starts at step {start_step}, but the workers do not all start from "
            f"the same step (per replica: {steps}): they restored different checkpoints, or "
            "some found none",
            hint="resuming a multi-worker run needs checkpoint.dir on storage every worker "
            "reads (a bucket or shared volume), not each worker's own disk",
        )


def weights_digest(model: keras.Model) -> str:
    """sha256 over every weight's bytes: equal digests mean bit-identical models."""
    h = hashlib.sha256()
    for w in model.weights:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w.value)).tobytes())
    return h.hexdigest()


def _all_finite(model: keras.Model) -> bool:
    return all(bool(tf.reduce_all(tf.math.is_finite(w.value))) for w in model.trainable_weights)


def run_train(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    splits: Any = None,
    backup: TrainingBackup | BackupAgent | None = None,
) -> TrainResult:
    """Train `cfg.model` on the data, resuming from the latest checkpoint when one exists.

    Raises Preempted (exit 75) after saving when SIGTERM arrives, TrainingDiverged (exit 5) on a
    NaN/Inf loss without touching the last good checkpoint. Only the chief writes to the run
    directory. `splits` (a tfship.data.Splits) skips loading the data again; `backup` is the
    run's checkpoint backup when the caller opened it already (`tfship train` does, before
    importing TensorFlow); run_train closes it.
    """
    t_start = time.perf_counter()
    chief = is_chief()
    # Checkpoint backup (tfship.backup, off unless backup.enabled): its agent process starts
    # first, so its start-up and the fetch of a backed-up generation overlap setting up devices,
    # loading the data and building the model.
    if backup is None:
        from tfship.backup import open_training_backup

        backup = open_training_backup(cfg, run_dir, chief=chief)
    try:
        return _train(cfg, run_dir, splits, backup, chief=chief, t_start=t_start)
    except (tf.errors.UnavailableError, tf.errors.CancelledError) as exc:
        backup.close(preempted=True)
        if cluster_size() <= 1:
            raise
        # A collective with the other workers broke: one of them stopped (its own log says
        # why: a DataError, a preemption, a crash) or the network between them failed. Not a
        # tfship bug (exit 1) and not this worker's data.
        raise InfraError(
            f"a collective with the other training workers failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]})",
            hint="another worker stopped or became unreachable: read every worker's log for "
            "the first error; rerun all workers to resume from the last checkpoint",
        ) from exc
    except BaseException:
        # Failed, diverged, preempted or interrupted, at any point: back up what the
        # checkpoints hold, within backup.preempt_timeout_seconds (a no-op once closed).
        backup.close(preempted=True)
        raise


def _train(
    cfg: PipelineConfig,
    run_dir: RunDir,
    splits: Any,
    backup: TrainingBackup | BackupAgent,
    *,
    chief: bool,
    t_start: float,
) -> TrainResult:
    """run_train's body; the caller closes `backup` when this raises."""
    # Devices and the (multi-worker) strategy before anything else: both must exist before TF
    # runs any op.
    configure_devices(cfg.train)
    strategy = make_strategy(cfg.train)
    if splits is None:
        from tfship.data import load_splits

        splits = load_splits(cfg)  # checks features and labels itself
    else:
        # Splits handed in by a caller: a NaN pixel would surface as a diverged loss (exit 5),
        # blaming training for bad data.
        from tfship.data.labels import check_pixels
        from tfship.data.schema import Kind

        for feature in splits.schema.of_kind(Kind.IMAGE):
            for part in (splits.x_train, splits.x_val):
                check_pixels(np.asarray(part[feature.name]), finite_only=True)
    task = cfg.task_obj
    names = splits.schema.names

    tcfg = cfg.train
    replicas = strategy.num_replicas_in_sync
    global_batch = tcfg.per_replica_batch_size * replicas
    # A StreamSplits counts its training examples without holding them.
    train_size = getattr(splits, "train_size", None)
    if train_size is None:
        train_size = len(splits.y_train)
    steps_per_epoch = max(1, train_size // global_batch)
    total_steps = tcfg.epochs * steps_per_epoch
    if tcfg.max_steps is not None:
        total_steps = min(total_steps, tcfg.max_steps)
    lr = tcfg.learning_rate * (replicas if tcfg.scale_learning_rate else 1)

    # Seeds Python, NumPy and TF, so a run's initial weights (and dropout) follow run.seed.
    keras.utils.set_random_seed(cfg.run.seed)
    from tfship.model import ModelSpec, build_model

    spec = ModelSpec.from_splits(task, splits)
    with strategy.scope():
        model = build_model(cfg.model, spec)
        optimizer = make_optimizer(cfg, lr, total_steps)
        optimizer.build(model.trainable_variables)
        step_var = tf.Variable(
            0,
            dtype=tf.int64,
            trainable=False,
            name="step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
    # A host-side copy of model and optimizer lets checkpoints be written in the background
    # while training continues (see TrainingCheckpoints).
    with tf.device("/cpu:0"):
        shadow_model = build_model(cfg.model, spec)
        shadow_optimizer = make_optimizer(cfg, lr, total_steps)
        shadow_optimizer.build(shadow_model.trainable_variables)
    # What these checkpoints are bound to: this run, and everything that changes its result
    # (tfship.checkpoint_guard); another run's checkpoints are never resumed.
    guard = guard_record(
        cfg,
        data_fingerprint=splits.fingerprint,
        schema=splits.schema,
        label_names=splits.label_names,
        replicas=replicas,
    )
    # Checkpoint backup: on a fresh runner the newest complete remote generation must be
    # back before the CheckpointManager looks (restore() waits for open's background fetch).
    backup.restore()
    keeper = TrainingCheckpoints(
        cfg,
        run_dir,
        model=model,
        optimizer=optimizer,
        step=step_var,
        chief=chief,
        guard=guard,
        shadow=(shadow_model, shadow_optimizer),
    )
    resumed_from = keeper.restore_latest()
    resumed_iters = int(optimizer.iterations.numpy()) if resumed_from is not None else None
    start_step = resumed_from or 0
    if cluster_size() > 1:
        _require_one_start_step(strategy, start_step)
    if chief:
        run_dir.ensure()
        dump_config(cfg, run_dir.config)

    train_data, val_data = distributed_inputs(
        strategy,
        cfg,
        splits,
        global_batch=global_batch,
        start_step=start_step,
        steps_per_epoch=steps_per_epoch,
    )
    train_steps, evaluate = build_steps(
        strategy,
        model,
        optimizer,
        step_var,
        global_batch=global_batch,
        task=task,
        names=names,
        class_weights=task.class_weights(
            splits.class_weight_labels()
            if hasattr(splits, "class_weight_labels")
            else splits.y_train,
            splits.label_names,
        ),
    )
    board = TensorBoardLog(run_dir.tensorboard, enabled=chief)
    report = TrainReport(
        run_dir.train_json,
        enabled=chief,
        strategy=_strategy_name(strategy),
        replicas=replicas,
        workers=max(cluster_size(), 1),
        per_replica_batch_size=tcfg.per_replica_batch_size,
        global_batch_size=global_batch,
        learning_rate=lr,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        epochs=tcfg.epochs,
        best_metric=cfg.checkpoint.best_metric,
        resumed_from_step=resumed_from,
        resumed_optimizer_iterations=resumed_iters,
        t_start=t_start,
    )
    if resumed_from is not None:
        report.keep_history_until(start_step)
    history = report.history

    step = start_step
    recorded = task.training_metric_directions()
    last_metrics: dict[str, float] = {
        k: v for k, v in (history[-1] if history else {}).items() if k in recorded
    }
    epoch_loss = 0.0
    epoch_stats = np.zeros(len(task.STATISTICS))
    epoch_steps = 0
    epoch_t0 = time.perf_counter()
    epoch_step_seconds = 0.0
    sample_size = global_batch

    def write_train_json() -> None:
        report.write(
            step=step, optimizer_iterations=int(optimizer.iterations.numpy()), keeper=keeper
        )

    def train_metrics() -> dict[str, float]:
        summary = task.summarize(epoch_stats.tolist(), max(epoch_steps * sample_size, 1))
        return {"loss": epoch_loss / max(epoch_steps, 1), **summary}

    def val_metrics() -> dict[str, float]:
        out = evaluate(val_data).numpy().astype(np.float64)
        count = max(float(out[-1]), 1.0)
        summary = task.summarize(out[1:-1].tolist(), count)
        return {"val_loss": out[0] / count, **{f"val_{k}": v for k, v in summary.items()}}

    def end_epoch() -> None:
        nonlocal epoch_loss, epoch_stats, epoch_steps, epoch_t0, last_metrics
        nonlocal epoch_step_seconds
        t0 = time.perf_counter()
        validation = val_metrics()
        epoch_eval_seconds = time.perf_counter() - t0
        report.eval_seconds += epoch_eval_seconds
        metrics = {**train_metrics(), **validation}
        epoch = math.ceil(step / steps_per_epoch)
        history.append(
            {
                "epoch": epoch,
                "step": step,
                **metrics,
                "steps": epoch_steps,
                "step_seconds": epoch_step_seconds,  # the training steps alone
                "eval_seconds": epoch_eval_seconds,
                "seconds": time.perf_counter() - epoch_t0,
            }
        )
        last_metrics = metrics
        board.epoch(step, metrics)
        if _all_finite(model):
            keeper.save_best_if_better(step, metrics)
            backup.sync()
        write_train_json()
        log.info("epoch %d: %s", epoch, " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        epoch_loss = 0.0
        epoch_stats = np.zeros(len(task.STATISTICS))
        epoch_steps = 0
        epoch_t0 = time.perf_counter()
        epoch_step_seconds = 0.0

    def diverged(what: str) -> TrainingDiverged:
        report.status = "diverged"
        write_train_json()
        last = keeper.latest_saved_step()
        kept = f"the last good checkpoint (step {last}) is kept" if last else "no checkpoint yet"
        return TrainingDiverged(
            f"training diverged at step {step}: {what}; {kept}",
            hint=f"lower train.learning_rate (now {lr:g}), check the data for NaN/Inf values, "
            "or use a smaller model; a rerun resumes from the last good checkpoint",
        )

    progress = Progress(tcfg.progress, total_steps, start_step, tcfg.log_every_steps, chief)
    iterator = iter(train_data)
    # Where a compiled call must stop (see chunk_end).
    boundaries = (steps_per_epoch, total_steps, cfg.checkpoint.every_steps)
    try:
        with _SigtermFlag() as sigterm:
            while step < total_steps:
                t0 = time.perf_counter()
                n = chunk_end(step, tcfg.steps_per_execution, *boundaries) - step
                flags = tf.constant([float(sigterm.raised), float(keeper.seconds_due())])
                out = train_steps(iterator, flags, tf.constant(n, dtype=tf.int32))
                values = out.numpy().astype(np.float64)
                loss_sum, stats = float(values[0]), values[1 : 1 + len(task.STATISTICS)]
                first_bad, stop_flag, time_flag = values[-3:].tolist()
                stop, time_due = stop_flag > 0, time_flag > 0
                elapsed = time.perf_counter() - t0
                report.train_seconds += elapsed
                epoch_step_seconds += elapsed
                if not math.isfinite(loss_sum):
                    # The steps after the first bad one ran on NaN weights; nothing was saved.
                    step += int(first_bad) + 1 if first_bad >= 0 else n
                    raise diverged("the loss is NaN or Inf")
                step += n
                report.steps_run += n
                epoch_loss += loss_sum
                epoch_stats = epoch_stats + stats
                epoch_steps += n
                epoch = math.ceil(step / steps_per_epoch)
                progress.update(step, n, epoch, train_metrics())
                if crossed(step, n, tcfg.log_every_steps):
                    board.step_loss(step, loss_sum / n)
                if stop or time_due or keeper.steps_due(step):
                    if not _all_finite(model):
                        raise diverged("the weights hold NaN/Inf values")
                    keeper.save(step, block=stop)  # a preempted run waits for its checkpoint
                    backup.sync()  # hands the generation to the agent; never blocks
                if stop:
                    report.status = "preempted"
                    write_train_json()
                    raise Preempted(
                        f"SIGTERM received: saved a checkpoint at step {step} of {total_steps}",
                        hint="rerun the same command to resume from it",
                    )
                if step % steps_per_epoch == 0 or step == total_steps:
                    end_epoch()
    finally:
        progress.close()
        board.flush()
        keeper.close()

    if report.steps_run == 0:
        # Relaunched after the run had finished: report the restored model's validation
        # metrics (every worker evaluates, so the collectives stay matched).
        last_metrics = {**last_metrics, **val_metrics()}
    if keeper.latest_saved_step() != step:
        if not _all_finite(model):
            raise diverged("the weights hold NaN/Inf values")
        keeper.save(step)
    report.status = "completed"
    write_train_json()
    keeper.close()
    backup.close()
    return TrainResult(
        run_dir=str(run_dir.root),
        strategy=report.strategy,
        replicas=replicas,
        workers=report.workers,
        global_batch_size=global_batch,
        steps=step,
        total_steps=total_steps,
        epochs_completed=len(history),
        steps_per_second=report.steps_per_second,
        resumed_from_step=resumed_from,
        resumed_optimizer_iterations=resumed_iters,
        optimizer_iterations=int(optimizer.iterations.numpy()),
        metrics=last_metrics,
        best_step=keeper.best_step,
        best_metric=cfg.checkpoint.best_metric,
        best_value=keeper.best_value,
        checkpoint=keeper.manager.latest_checkpoint if chief else None,
        weights_sha256=weights_digest(model),
        chief=chief,
        wall_seconds=time.perf_counter() - t_start,
        history=tuple(history),
    )
