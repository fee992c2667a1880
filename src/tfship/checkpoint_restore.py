"""Reading checkpoints back: the generations in a directory, the guard fingerprint each one
carries, and `restore_for_export` (only this run's weights, trained with this config and code).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import keras
import tensorflow as tf

from tfship.checkpoint_guard import checkpoint_files, expected_record, load_guard, require_match
from tfship.checkpoint_names import BEST_DIR, BEST_FILE, GUARD_FILE, step_of
from tfship.config import PipelineConfig
from tfship.errors import ConfigError, DataError, ModelError
from tfship.fsutil import read_json
from tfship.rundir import RunDir, checkpoint_dir

_GENERATION = re.compile(r"^ckpt-(\d+)$")
# Where a checkpoint keeps the guard fingerprint (the `guard` attribute of tf.train.Checkpoint).
_GUARD_KEY = "guard/.ATTRIBUTES/VARIABLE_VALUE"


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


def guard_variable(fingerprint: str) -> tf.Variable:
    with tf.device("/cpu:0"):  # string variables live on the host
        return tf.Variable(fingerprint, dtype=tf.string, trainable=False, name="guard")


def embedded_fingerprint(prefix: str) -> str | None:
    """The guard fingerprint stored in checkpoint `prefix` (None: it has none). Raises on a
    generation that cannot be read, as restoring it would."""
    reader = tf.train.load_checkpoint(prefix)
    if not reader.has_tensor(_GUARD_KEY):
        return None
    value = reader.get_tensor(_GUARD_KEY)
    return value.decode() if isinstance(value, bytes) else str(value)


def refuse_foreign(prefix: str, found: str | None, guard: dict[str, Any]) -> ConfigError:
    directory = Path(prefix).parent
    return ConfigError(
        f"checkpoint {prefix} was not written under {directory / GUARD_FILE} (it carries "
        + (f"guard fingerprint {found[:12]}…" if found else "no guard fingerprint")
        + f", run.json has {guard['fingerprint'][:12]}…): it was copied in from another run "
        "or another configuration, so its weights are not used",
        hint=f"remove it (and anything else not written by this run) from {directory}, or "
        "start over with `tfship run --fresh`",
    )


def restore_for_export(
    cfg: PipelineConfig,
    run_dir: RunDir,
    which: Literal["best", "latest"] = "best",
    *,
    splits: Any,
) -> tuple[keras.Model, dict[str, Any]]:
    """Rebuild the model and load the best (or latest) checkpoint's weights into it.

    Only this run's checkpoints, trained with this config and code: run.json must be intact and
    match in its run, config and code parts (ConfigError naming every difference), and the
    checkpoint must carry run.json's fingerprint. The data part is returned for the caller to
    compare with the data it exports with.

    The model is rebuilt from `splits` (what the builder fits on: `ModelSpec.from_splits`),
    which must be the data the run trained on: same fingerprint, schema and labels (DataError
    naming what changed otherwise).

    Returns the model and an info dict: which, checkpoint, step, run_id, label_names, schema,
    data_fingerprint, and for `best` the metric, its value and all metrics.
    """
    from tfship.model import DEFAULT_BUILDER, ModelSpec, build_model, resolve_builder

    directory = checkpoint_dir(cfg, run_dir)
    if not (directory / GUARD_FILE).is_file() and not checkpoint_files(directory):
        raise ModelError(
            f"no training checkpoints in {directory}",
            hint="run `tfship train` with the same --run-dir (and in the same pipeline) first",
        )
    guard = load_guard(directory)
    resolve_builder(cfg.model.builder or DEFAULT_BUILDER)  # a builder that is gone: its error
    require_match(directory, guard, expected_record(cfg), ("run", "config", "code"))
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
    trained = guard["trained"]
    now = (splits.fingerprint, splits.schema.to_json(), list(splits.label_names))
    then = (trained.get("data_fingerprint"), trained.get("schema"), trained.get("label_names"))
    if now != then:
        parts = ("fingerprint", "schema", "labels")
        changed = [k for k, a, b in zip(parts, then, now, strict=True) if a != b]
        raise DataError(
            f"the data changed since training ({', '.join(changed)}): checkpoint data "
            f"{then[0]} with labels {then[2]}, data now {now[0]} with labels {now[2]}; golden "
            "requests and the model's preprocessing must come from the same data",
            hint="export with the data the model was trained on, or retrain",
        )
    model = build_model(cfg.model, ModelSpec.from_splits(cfg.task_obj, splits))
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    try:
        found = embedded_fingerprint(path)
        if found == guard["fingerprint"]:
            tf.train.Checkpoint(model=model, step=step).restore(path).expect_partial()
    # Same as resuming: damage surfaces as OpError, IndexError (truncated shard), ValueError, ...
    except Exception as exc:
        raise ModelError(
            f"cannot restore {path} into the configured model: {exc}",
            hint="the checkpoint files are damaged or belong to another model; nothing was "
            "exported. Retrain with `tfship run --fresh` (or delete this checkpoint directory)",
        ) from exc
    if found != guard["fingerprint"]:
        raise refuse_foreign(path, found, guard)
    info: dict[str, Any] = {
        "which": which,
        "checkpoint": path,
        "step": int(step.numpy()),
        "run_id": guard["run"]["run_id"],
        "label_names": trained["label_names"],
        "schema": trained["schema"],
        "data_fingerprint": trained["data_fingerprint"],
    }
    for key in ("metric", "value", "metrics"):
        if key in extra:
            info[key] = extra[key]
    return model, info
