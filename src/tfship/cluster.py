"""Which task of a multi-worker cluster this process is, from TF_CONFIG.

Kept apart from tfship.distribute (which imports TensorFlow) so the CLI can decide, before
TensorFlow's 5-7 s import, whether this task is the chief that runs the checkpoint backup.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tfship.errors import ConfigError

# Task types that run the training loop (evaluator and ps jobs do not join the collectives).
_WORKER_TYPES = ("chief", "worker")


def tf_config() -> dict[str, Any]:
    """The parsed TF_CONFIG variable ({} when unset), as set by TFJob / the test harness."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"TF_CONFIG is not valid JSON ({exc.msg} at position {exc.pos})",
            hint='expected {"cluster": {"worker": ["host:port", ...]}, '
            '"task": {"type": "worker", "index": 0}}',
        ) from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"TF_CONFIG must be a JSON object; received {type(parsed).__name__}")
    return parsed


def cluster_size(config: dict[str, Any] | None = None) -> int:
    """Number of tasks that train (chief + workers) in TF_CONFIG; 0 without TF_CONFIG."""
    cluster = (tf_config() if config is None else config).get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in _WORKER_TYPES)


def is_chief(config: dict[str, Any] | None = None) -> bool:
    """True on the task that writes checkpoints, TensorBoard and train.json.

    That is the `chief` task, or `worker` 0 when the cluster has no chief, or the only
    process when there is no TF_CONFIG at all (TensorFlow's multi-worker convention).
    """
    config = tf_config() if config is None else config
    task = config.get("task") or {}
    kind = task.get("type")
    if kind is None:
        return True
    if kind == "chief":
        return True
    return (
        kind == "worker"
        and int(task.get("index", 0)) == 0
        and not config.get("cluster", {}).get("chief")
    )


def task_id(config: dict[str, Any] | None = None) -> str:
    """A short name of this task ('worker-1'), 'local' without TF_CONFIG."""
    task = (tf_config() if config is None else config).get("task") or {}
    return f"{task['type']}-{task.get('index', 0)}" if task.get("type") else "local"
