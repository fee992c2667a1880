"""Training checkpoints: step-level generations, the best one by validation metric, a guard.

Layout under `checkpoint.dir` (default `<run dir>/checkpoints`):

    checkpoint, ckpt-<step>.*   tf.train.CheckpointManager generations (model, optimizer, step)
    best/                       the best by `checkpoint.best_metric` (model, step) + best.json
    run.json                    what these checkpoints belong to; a resume with a different
                                data/model config or per-replica batch is refused, and so is a
                                resume of generations that have no run.json next to them
    corrupt/ckpt-<step>-<time>-*/  generations that failed to restore, set aside, kept

TensorFlow writes a checkpoint's data files first and then replaces the `checkpoint` state file
atomically, so "latest" never names a half-written generation. One damaged later (a truncated
shard, a bad disk, a partial copy) is skipped on resume for the newest generation that restores.
Under MultiWorkerMirroredStrategy every worker saves at the same steps; non-chief workers write
to a temporary directory that is removed right after (TensorFlow's multi-worker guide), so only
the chief's files persist.
Resuming a multi-worker run needs `checkpoint.dir` on storage every worker can read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import keras
import tensorflow as tf

from tfship.checkpoint_names import BEST_DIR, BEST_FILE, GUARD_FILE, step_of
from tfship.config import PipelineConfig
from tfship.errors import ConfigError, ModelError
from tfship.fsutil import atomic_write_json, read_json
from tfship.rundir import RunDir

log = logging.getLogger(__name__)

GUARD_SCHEMA = "tfship-checkpoints/1"
CORRUPT_DIR = "corrupt"
_GENERATION = re.compile(r"^ckpt-(\d+)$")
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def checkpoint_dir(cfg: PipelineConfig, run_dir: RunDir) -> Path:
    return Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else run_dir.checkpoints


def generations(directory: Path) -> list[str]:
    """Checkpoint prefixes in `directory`, newest (highest step) first.

    The generations the `checkpoint` state file lists, plus any ckpt-<n>.index on disk: the state
    file itself may be missing or unreadable (TensorFlow then returns no state at all), and
    `tf.train.latest_checkpoint` returns None when the newest index is gone, which would make
    damaged checkpoints look like a fresh start.
    """
    names: set[str] = set()
    try:
        state = tf.train.get_checkpoint_state(str(directory))
    except ValueError:  # a state file without model_checkpoint_path
        state = None
    if state is not None:
        names.update(Path(p).name for p in state.all_model_checkpoint_paths)
        names.add(Path(state.model_checkpoint_path).name)
    if directory.is_dir():
        names.update(p.name.removesuffix(".index") for p in directory.glob("ckpt-*.index"))
    found = [n for n in names if _GENERATION.match(n)]
    return [str(directory / n) for n in sorted(found, key=step_of, reverse=True)]


def guard_record(
    cfg: PipelineConfig,
    *,
    data_fingerprint: str,
    input_shape: tuple[int, ...],
    class_names: tuple[str, ...],
) -> dict[str, Any]:
    """What must not change across a resume, plus what `restore_for_export` needs to rebuild."""
    frozen = {
        "data": cfg.data.model_dump(mode="json"),
        "model": cfg.model.model_dump(mode="json"),
        "per_replica_batch_size": cfg.train.per_replica_batch_size,
        "data_fingerprint": data_fingerprint,
    }
    blob = json.dumps(frozen, sort_keys=True, separators=(",", ":")).encode()
    return {
        "schema": GUARD_SCHEMA,
        "fingerprint": hashlib.sha256(blob).hexdigest(),
        "frozen": frozen,
        "input_shape": list(input_shape),
        "num_classes": len(class_names),
        "class_names": list(class_names),
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [
                f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)
            ]
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def check_guard(directory: Path, record: dict[str, Any]) -> None:
    """Refuse to resume checkpoints written for another data/model config or batch size, or
    checkpoints whose run.json is missing (nothing says what they were trained with).

    A checkpoint backup restored onto a fresh runner brings run.json back with the generation
    (tfship.backup uploads it as an extra of every generation), so it passes as usual.
    """
    path = directory / GUARD_FILE
    found = generations(directory)
    if not found:
        return
    if not path.is_file():
        names = ", ".join(Path(p).name for p in found)
        raise ConfigError(
            f"{directory} holds training checkpoints ({names}) but no {GUARD_FILE}, which records "
            "the data/model config they were trained with, so tfship cannot tell whether "
            "resuming them is safe",
            hint=f"delete {directory} or start over with `tfship run --fresh` or a new run "
            f"(--set run.run_id=<new id>); if the checkpoints are this run's, put back the "
            f"{GUARD_FILE} that was next to them",
        )
    old = read_json(path)
    if old.get("fingerprint") == record["fingerprint"]:
        return
    diffs = _differences(old.get("frozen", {}), record["frozen"])
    raise ConfigError(
        f"the checkpoints in {directory} were written for a different configuration, so this "
        "run cannot resume from them; changed: " + ("; ".join(diffs) or "(unknown)"),
        hint=f"start a new run (--set run.run_id=<new id>, or `tfship run --fresh`), delete "
        f"{directory}, or restore the previous values",
    )


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
        if ccfg.best_metric not in METRICS:
            raise ConfigError(
                f"checkpoint.best_metric={ccfg.best_metric!r} is not a metric training records; "
                f"expected one of {', '.join(METRICS)}"
            )
        self.cfg = ccfg
        self.chief = chief
        self.directory = checkpoint_dir(cfg, run_dir)
        self.guard = guard
        self.step = step
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
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
                model=shadow_model, optimizer=shadow_optimizer, step=shadow_step
            )
            best_writer = tf.train.Checkpoint(model=shadow_model, step=shadow_step)
        else:
            writer = self.checkpoint
            best_writer = tf.train.Checkpoint(model=model, step=step)
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
        checked first, and written for a fresh start. A generation that fails to restore is
        skipped with a warning and the next older one tried; the chief then sets the failed
        ones aside (see `_set_aside`). ModelError when none restores.
        """
        check_guard(self.directory, self.guard)
        candidates = generations(self.directory)
        if not candidates:
            if self.chief:
                atomic_write_json(self.directory / GUARD_FILE, self.guard)
            return None
        failed: list[tuple[str, str]] = []
        for i, prefix in enumerate(candidates):
            try:
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
        log.info("resumed from %s (step %d)", prefix, step)
        return step

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


def restore_for_export(
    cfg: PipelineConfig, run_dir: RunDir, which: Literal["best", "latest"] = "best"
) -> tuple[keras.Model, dict[str, Any]]:
    """Rebuild the model and load the best (or latest) checkpoint's weights into it.

    Returns the model and an info dict: which, checkpoint, step, class_names, input_shape,
    num_classes, data_fingerprint, and for `best` the metric, its value and all metrics.
    """
    from tfship.model import build_model

    directory = checkpoint_dir(cfg, run_dir)
    guard_path = directory / GUARD_FILE
    if not guard_path.is_file():
        raise ModelError(
            f"no training checkpoints in {directory} ({GUARD_FILE} is missing)",
            hint="run `tfship train` with the same --run-dir first",
        )
    guard = read_json(guard_path)
    trained_model = guard["frozen"]["model"]
    if trained_model != cfg.model.model_dump(mode="json"):
        diffs = _differences({"model": trained_model}, {"model": cfg.model.model_dump(mode="json")})
        raise ConfigError(
            f"the checkpoints in {directory} hold a different model than the config asks for: "
            + "; ".join(diffs),
            hint="export with the configuration the model was trained with "
            "(config.resolved.yaml in the run directory)",
        )
    if which == "best":
        path = tf.train.latest_checkpoint(str(directory / BEST_DIR))
        extra = read_json(directory / BEST_DIR / BEST_FILE) if path else {}
    elif which == "latest":
        path, extra = tf.train.latest_checkpoint(str(directory)), {}
    else:
        raise ValueError(f"which must be 'best' or 'latest', not {which!r}")
    if path is None:
        raise ModelError(
            f"no {which} checkpoint in {directory}" + (f"/{BEST_DIR}" if which == "best" else ""),
            hint="training saves best/ after each validation; finish `tfship train` first",
        )
    model = build_model(cfg.model, tuple(guard["input_shape"]), guard["num_classes"])
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    try:
        tf.train.Checkpoint(model=model, step=step).restore(path).expect_partial()
    # Same as resuming: damage surfaces as OpError, IndexError (truncated shard), ValueError, ...
    except Exception as exc:
        raise ModelError(
            f"cannot restore {path} into the configured model: {exc}",
            hint="the checkpoint files are damaged or belong to another model; nothing was "
            "exported. Retrain with `tfship run --fresh` (or delete this checkpoint directory)",
        ) from exc
    info: dict[str, Any] = {
        "which": which,
        "checkpoint": path,
        "step": int(step.numpy()),
        "class_names": guard["class_names"],
        "input_shape": guard["input_shape"],
        "num_classes": guard["num_classes"],
        "data_fingerprint": guard["frozen"]["data_fingerprint"],
    }
    for key in ("metric", "value", "metrics"):
        if key in extra:
            info[key] = extra[key]
    return model, info
