"""Training checkpoints: step-level generations, the best one by validation metric, a guard.

Layout under the run's checkpoint directory (`<run dir>/checkpoints`, or
`<checkpoint.dir>/<run id>`, see tfship.rundir.checkpoint_dir):

    checkpoint, ckpt-<step>.*   tf.train.CheckpointManager generations (model, optimizer, step)
    best/                       the best by `checkpoint.best_metric` (model, step) + best.json
    run.json                    the guard: the run and the settings, data and code these
                                checkpoints belong to (tfship.checkpoint_guard); anything else
                                resuming or exporting them is refused with the differences
    corrupt/ckpt-<step>-<time>-*/  generations that failed to restore, set aside, kept

Every generation (best/ included) also stores the guard's fingerprint as a string variable
`guard`: a generation copied in from another run, or written under another run.json, is
refused by name before its weights are loaded.

TensorFlow writes a checkpoint's data files first and then replaces the `checkpoint` state file
atomically, so "latest" never names a half-written generation. One damaged later (a truncated
shard, a bad disk, a partial copy) is skipped on resume for the newest generation that restores.
Under MultiWorkerMirroredStrategy every worker saves at the same steps; non-chief workers write
to a temporary directory that is removed right after (TensorFlow's multi-worker guide), so only
the chief's files persist.
Resuming a multi-worker run needs `checkpoint.dir` on storage every worker can read.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfship.checkpoint_guard import check_guard, guard_record
from tfship.checkpoint_names import BEST_DIR, BEST_FILE, GUARD_FILE, step_of
from tfship.checkpoint_restore import (
    embedded_fingerprint,
    generations,
    guard_variable,
    refuse_foreign,
    restore_for_export,
)
from tfship.config import PipelineConfig
from tfship.errors import ConfigError, ModelError
from tfship.fsutil import atomic_write_json, read_json
from tfship.rundir import RunDir, checkpoint_dir

__all__ = [
    "TrainingCheckpoints",
    "check_guard",
    "checkpoint_dir",
    "generations",
    "guard_record",
    "restore_for_export",
]

log = logging.getLogger(__name__)

CORRUPT_DIR = "corrupt"


def _best_is_better(mode: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class TrainingCheckpoints:
    """Saves and restores one training run's model, optimizer and step counter.

    With a `shadow` (a second model and optimizer of the same structure, on the host), a save
    copies every variable into the shadow in one graph call and writes the shadow's checkpoint
    on a background thread while training goes on: the written state is exactly the state at
    the save's step, and a save costs the loop only the copy. Checkpoint keys are the same as
    the live objects', so the live checkpoint restores them. The next save, `wait()` and
    `close()` wait for a write in flight. Without a shadow, saves are synchronous.
    """

    def __init__(
        self,
        cfg: PipelineConfig,
        run_dir: RunDir,
        *,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        step: tf.Variable,
        chief: bool,
        guard: dict[str, Any],
        shadow: tuple[keras.Model, keras.optimizers.Optimizer] | None = None,
    ) -> None:
        ccfg = cfg.checkpoint
        recorded = cfg.task_obj.training_metric_directions()
        if ccfg.best_metric not in recorded:
            raise ConfigError(
                f"checkpoint.best_metric={ccfg.best_metric!r} is not a metric training records "
                f"for task.type {cfg.task.type}; expected one of {', '.join(sorted(recorded))}"
            )
        self.cfg = ccfg
        self.chief = chief
        self.directory = checkpoint_dir(cfg, run_dir)
        self.guard = guard
        self.run_id: str = guard["run"]["run_id"]
        self.step = step
        # The guard fingerprint goes into every generation: the weights carry their binding.
        marker = guard_variable(guard["fingerprint"])
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, step=step, guard=marker
        )
        self._copy: Any = None
        if shadow is not None:
            shadow_model, shadow_optimizer = shadow
            shadow_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            live = [*model.variables, *optimizer.variables, step]
            copies = [*shadow_model.variables, *shadow_optimizer.variables, shadow_step]
            if len(live) != len(copies) or any(
                a.shape != b.shape or a.dtype != b.dtype for a, b in zip(live, copies, strict=False)
            ):
                raise ValueError("the shadow model/optimizer does not match the live ones")

            @tf.function
            def copy() -> None:
                for target, source in zip(copies, live, strict=True):
                    target.assign(source)

            self._copy = copy
            writer = tf.train.Checkpoint(
                model=shadow_model, optimizer=shadow_optimizer, step=shadow_step, guard=marker
            )
            best_writer = tf.train.Checkpoint(model=shadow_model, step=shadow_step, guard=marker)
        else:
            writer = self.checkpoint
            best_writer = tf.train.Checkpoint(model=model, step=step, guard=marker)
        self._tmp: Path | None = None
        if chief:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_dir = self.directory
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix="tfship-worker-ckpt-"))
            write_dir = self._tmp
        self._writer, self._write_dir = writer, write_dir
        self.manager = self._new_manager()
        self.best_manager = tf.train.CheckpointManager(
            best_writer, str(write_dir / BEST_DIR), max_to_keep=1, checkpoint_name="best"
        )
        best = self._read_best()
        self.best_value: float | None = best["value"] if best else None
        self.best_step: int | None = best["step"] if best else None
        self.saves = 0
        self.save_seconds = 0.0  # time the training loop spent in save calls
        self.write_seconds = 0.0  # time spent writing (in the background with a shadow)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._shadow_step: int | None = None
        self._last_save_time = time.monotonic()

    # -- resume ---------------------------------------------------------------------------

    def restore_latest(self) -> int | None:
        """Restore the newest generation (every worker reads the chief's directory).

        Returns the restored step, or None when there is nothing to resume. The guard is
        checked first (ConfigError naming what differs), and written for a fresh start. A
        generation that fails to restore is skipped with a warning and the next older one
        tried; the chief then sets the failed ones aside (see `_set_aside`). ModelError when
        none restores; ConfigError for a generation that carries another guard fingerprint.
        """
        check_guard(self.directory, self.guard)
        self._check_best()
        candidates = generations(self.directory)
        if not candidates:
            log.info(
                "run %s: no checkpoints of this run in %s; training starts at step 0",
                self.run_id,
                self.directory,
            )
            if self.chief:
                atomic_write_json(self.directory / GUARD_FILE, self.guard)
            return None
        failed: list[tuple[str, str]] = []
        for i, prefix in enumerate(candidates):
            try:
                found = embedded_fingerprint(prefix)
                if found == self.guard["fingerprint"]:
                    self.checkpoint.restore(prefix).assert_existing_objects_matched()
            # Damage surfaces as many types (OpError, DataLossError, IndexError for a truncated
            # shard, AssertionError, ValueError): any failure means "not this generation". A
            # partly applied restore is overwritten in full by the next generation tried.
            except Exception as exc:
                why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
                failed.append((prefix, why))
                log.warning(
                    "checkpoint %s cannot be restored (%s); %s",
                    prefix,
                    why,
                    "trying the previous generation" if i + 1 < len(candidates) else "none left",
                )
                continue
            if found != self.guard["fingerprint"]:
                raise refuse_foreign(prefix, found, self.guard)
            break
        else:
            raise ModelError(
                f"none of the checkpoints in {self.directory} can be restored: "
                + "; ".join(f"{Path(p).name}: {why}" for p, why in failed),
                hint=f"delete {self.directory} to train from scratch, or start over with "
                "`tfship run --fresh` or a new run (--set run.run_id=<new id>)",
            )
        if failed and self.chief:
            self._set_aside(failed, restored=prefix, candidates=candidates)
        step = int(self.step.numpy())
        log.info("run %s: resumed from %s (step %d)", self.run_id, prefix, step)
        return step

    def _check_best(self) -> None:
        """best/ is exported: one written under another guard is refused like a generation."""
        try:
            best = tf.train.latest_checkpoint(str(self.directory / BEST_DIR))
            found = embedded_fingerprint(best) if best else None
        # Damaged: replaced by the next best save, and refused by export until then.
        except Exception:
            return
        if best is None:
            return
        if found != self.guard["fingerprint"]:
            raise refuse_foreign(best, found, self.guard)

    def _set_aside(
        self, failed: list[tuple[str, str]], *, restored: str, candidates: list[str]
    ) -> None:
        """Point the state file at the restored generation and move the failed ones aside.

        Left in place, a failed generation would stay in the CheckpointManager's state (listed
        as a kept generation, so it could be the only one left after the next sweep), and the
        next save with the same step number would overwrite its files: the evidence of what
        went wrong would be lost without a word. Moved to corrupt/ckpt-<n>-<UTC time>-*/, they stay
        available for inspection, are never resumed or backed up again, and are deleted only
        with the checkpoint directory. The state file is rewritten first (atomically), so a
        crash in between leaves the same decision to be made again on the next resume.
        """
        bad = {p for p, _ in failed}
        kept = [p for p in reversed(candidates) if p not in bad and step_of(p) <= step_of(restored)]
        # Timestamps as before: CheckpointManager treats generations listed without one as
        # preserved forever and drops them from its sweep (and from the state file's list).
        try:
            state = tf.train.get_checkpoint_state(str(self.directory))
        except ValueError:
            state = None
        before: dict[str, float] = {}
        if state is not None:  # the timestamps are absent from state files tfship.backup writes
            paths, times = state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps
            before = dict(zip(paths, times, strict=False))
        now = time.time()
        stamps = [min(before.get(p, now), now) for p in kept]
        tf.compat.v1.train.update_checkpoint_state(
            str(self.directory),
            restored,
            all_model_checkpoint_paths=kept,
            all_model_checkpoint_timestamps=stamps,
            last_preserved_timestamp=min(stamps) - 1.0,
        )
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for prefix in sorted(bad):
            name = Path(prefix).name
            files = [
                f for f in self.directory.iterdir() if f.name.startswith(f"{name}.") and f.is_file()
            ]
            (self.directory / CORRUPT_DIR).mkdir(exist_ok=True)
            # A new directory every time: a generation number can fail again in a later run.
            aside = Path(
                tempfile.mkdtemp(prefix=f"{name}-{stamp}-", dir=self.directory / CORRUPT_DIR)
            )
            for f in files:
                os.replace(f, aside / f.name)
            log.warning(
                "moved the files of checkpoint %s that cannot be restored to %s", prefix, aside
            )
        self.manager = self._new_manager()  # re-reads the rewritten state file

    def _new_manager(self) -> tf.train.CheckpointManager:
        return tf.train.CheckpointManager(
            self._writer, str(self._write_dir), max_to_keep=self.cfg.keep, checkpoint_name="ckpt"
        )

    # -- saving ---------------------------------------------------------------------------

    def seconds_due(self) -> bool:
        """Whether `checkpoint.every_seconds` has elapsed since the last save (local clock)."""
        every = self.cfg.every_seconds
        return every is not None and time.monotonic() - self._last_save_time >= every

    def steps_due(self, step: int) -> bool:
        every = self.cfg.every_steps
        return every is not None and step > 0 and step % every == 0

    def save(self, step: int, *, block: bool = False) -> None:
        """Write generation ckpt-<step> (in the background with a shadow; `block` waits)."""
        self._submit(step, lambda: self.manager.save(checkpoint_number=step), block)
        self._last_save_time = time.monotonic()
        self.saves += 1

    def save_best_if_better(self, step: int, metrics: dict[str, float]) -> bool:
        """Keep this model as best/ when `checkpoint.best_metric` improved. Deterministic
        across workers, since all of them see the same all-reduced metrics."""
        value = metrics.get(self.cfg.best_metric)
        if value is None or not _best_is_better(self.cfg.best_mode, value, self.best_value):
            return False

        def write() -> None:
            path = self.best_manager.save(checkpoint_number=step)
            if self.chief:
                atomic_write_json(
                    self.directory / BEST_DIR / BEST_FILE,
                    {
                        "step": step,
                        "metric": self.cfg.best_metric,
                        "mode": self.cfg.best_mode,
                        "value": value,
                        "metrics": metrics,
                        "checkpoint": Path(path).name,
                    },
                )

        self._submit(step, write, block=False)
        self.best_value, self.best_step = value, step
        return True

    def _submit(self, step: int, write: Any, block: bool) -> None:
        t0 = time.perf_counter()
        if self._copy is not None and self._shadow_step != step:
            self.wait()  # the shadow is about to change: earlier writes must be done with it
            self._copy()
            self._shadow_step = step

        def job() -> None:
            w0 = time.perf_counter()
            write()
            self._drop_worker_copy()
            self.write_seconds += time.perf_counter() - w0

        if self._copy is None:
            job()
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfship-ckpt")
            self._pending.append(self._pool.submit(job))  # one thread: writes stay in order
            if block:
                self.wait()
        self.save_seconds += time.perf_counter() - t0

    def wait(self) -> None:
        """Block until a write in flight is on disk; re-raise its error, if any."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def latest_saved_step(self) -> int | None:
        self.wait()
        latest = self.manager.latest_checkpoint
        return int(latest.rsplit("-", 1)[1]) if latest else None

    def best_info(self) -> dict[str, Any] | None:
        """best/best.json as written so far (the chief's; None elsewhere or before any)."""
        self.wait()
        return self._read_best()

    def _read_best(self) -> dict[str, Any] | None:
        path = self.directory / BEST_DIR / BEST_FILE
        return read_json(path) if self.chief and path.is_file() else None

    def _drop_worker_copy(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def close(self) -> None:
        """Wait for the last write, then remove a non-chief worker's temporary copy."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self._drop_worker_copy()
