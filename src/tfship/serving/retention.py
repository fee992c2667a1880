"""Retention, and the stable history it protects (read from the deploy log).

`apply_retention()` unloads and deletes what neither a label nor the previous stable still
needs; callers run it after a committed action, under the lease, and turn its failures into
warnings. `stable_history()` reads only valid records (a torn or damaged one is skipped), so
neither retention nor rollback depends on a perfect log.
"""

from __future__ import annotations

from typing import Any

from tfship.config import PipelineConfig
from tfship.serving.deploy_log import log_record
from tfship.serving.models_config import ModelState


def stable_history(records: list[dict[str, Any]]) -> list[int]:
    """Stable versions in order of promotion, rollbacks popped: [-2] is the previous stable."""
    stack: list[int] = []
    for r in records:
        if r.get("status") != "ok":
            continue
        before = (r.get("labels_before") or {}).get("stable")
        after = (r.get("labels_after") or {}).get("stable")
        if after is None or after == before:
            continue
        if r.get("action") == "rollback" and len(stack) >= 2 and stack[-2] == after:
            stack.pop()
        else:
            stack.append(after)
    return stack


def protected_versions(state: ModelState, history: list[int]) -> set[int]:
    """Versions that must stay loaded: labelled ones and the previous stable."""
    keep = set(state.labels.values())
    if len(history) >= 2:
        keep.add(history[-2])
    return keep


def apply_retention(cfg: PipelineConfig, target: Any, state: ModelState) -> list[int]:
    """Unload what is neither labelled nor previous-stable; delete beyond the last N on disk."""
    history = stable_history(target.repository.read_log(target.model))
    protected = protected_versions(state, history)
    cfg_now, current = target.read()
    # Retention only ever unloads: a protected version no longer loaded stays as it is.
    unload = tuple(v for v in current.versions if v not in protected)
    if unload:
        kept = [v for v in current.versions if v in protected]
        target.apply(cfg_now, current.with_versions(kept), gone=unload)
    on_disk = target.repository.versions(target.model)
    keep_disk = set(on_disk[-cfg.serving.retention :]) | protected
    removed = [v for v in on_disk if v not in keep_disk]
    for v in removed:
        target.repository.delete_version(target.model, v)
    if removed or unload:
        target.repository.append_log(
            target.model,
            log_record(
                "retention",
                target.model,
                environment=target.environment,
                status="ok",
                unloaded=list(unload),
                deleted=removed,
                why=f"keep last {cfg.serving.retention}",
            ),
        )
    return removed
