"""The deploy transaction: what every action records, and how a failed one is undone.

`transaction()` snapshots `models.config` and the model's labels and appends a `started`
record to the deploy log before anything changes (no log, no change). The action's body sets
`ctx["result"]`; its `ok` record and `deploy.json` are written *inside* the transaction, so if
either cannot be written the labels go back: a label never moves without a record. On any
failure it re-applies the snapshot, un-publishes a version the failed action published, logs
`status: failed` and raises DeployFailed, so `stable` never stops serving. Records of one action
share an `id`. `apply_retention()` unloads and deletes what neither a label nor the previous
stable (read from the deploy log by `stable_history()`) still needs; callers run it after the
transaction and turn its failures into warnings.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tfship.config import PipelineConfig
from tfship.errors import DeployFailed, GateFailed
from tfship.fsutil import atomic_write_json
from tfship.result import to_jsonable
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.deploy_log import log_record
from tfship.serving.models_config import ModelState
from tfship.serving.repository import PublishResult, VersionConflict
from tfship.serving.target import Target


@dataclass(frozen=True)
class DeployResult:
    """What one publish/deploy/promote/rollback did (also written to run_dir/deploy.json)."""

    action: str
    model: str
    environment: str | None
    mode: str  # "server" | "offline"
    status: str  # "ok" | "unchanged"
    version: int | None
    labels_before: dict[str, int]
    labels_after: dict[str, int]
    versions_before: list[int]
    versions_after: list[int]
    reason: str | None = None
    published: PublishResult | None = None
    golden: golden.GoldenCheck | None = None
    offline_check: Any = None
    removed_versions: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    next_step: str | None = None
    warnings: list[str] = field(default_factory=list)  # after the change took effect

    def render_text(self) -> str:
        where = f" ({self.environment})" if self.environment else ""
        lines = [
            f"{self.action}{where}: {self.model} version {self.version} "
            f"[{self.status}, {self.mode}]",
            f"  labels   {self.labels_before or '{}'} -> {self.labels_after or '{}'}",
            f"  versions {self.versions_before} -> {self.versions_after}",
        ]
        if self.golden is not None:
            lines.append(
                f"  golden   max |diff| {self.golden.max_abs_diff:.3g} <= {self.golden.tolerance:g}"
            )
        if self.removed_versions:
            lines.append(f"  removed  {self.removed_versions} (retention)")
        if self.seconds:
            lines.append("  seconds  " + ", ".join(f"{k} {v:.2f}" for k, v in self.seconds.items()))
        lines.extend(f"  WARNING  {w}" for w in self.warnings)
        if self.next_step:
            lines.append(f"  next: {self.next_step}")
        return "\n".join(lines)


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


def _ok_record(result: DeployResult, op: str) -> dict[str, Any]:
    return log_record(
        result.action,
        result.model,
        id=op,
        environment=result.environment,
        status="ok",
        version=result.version,
        why=result.reason,
        labels_before=result.labels_before,
        labels_after=result.labels_after,
        versions_before=result.versions_before,
        versions_after=result.versions_after,
    )


def write_deploy_json(run_dir: RunDir, result: DeployResult, record: dict[str, Any]) -> None:
    atomic_write_json(run_dir.ensure().deploy_json, {**to_jsonable(result), "record": record})


@contextlib.contextmanager
def transaction(
    action: str, run_dir: RunDir, target: Target, reason: str | None, version: int | None
) -> Iterator[dict[str, Any]]:
    """Record, then change; restore the previous config and labels on any failure.

    The body must set `ctx["result"]` (a DeployResult); after the block `ctx["record"]` holds
    the `ok` record that was logged.
    """
    before_cfg, before = target.read()
    op = uuid.uuid4().hex[:12]
    ctx: dict[str, Any] = {"cfg": before_cfg, "state": before, "published": None, "result": None}

    def record_of(status: str, **more: Any) -> dict[str, Any]:
        return log_record(
            action,
            target.model,
            id=op,
            environment=target.environment,
            status=status,
            version=version,
            why=reason,
            labels_before=dict(before.labels),
            versions_before=list(before.versions),
            **more,
        )

    # Before anything changes: a deploy log that cannot be written stops the action here.
    target.repository.append_log(target.model, record_of("started"))
    reloads0, writes0 = target.reloads, target.writes
    try:
        yield ctx
        result: DeployResult = ctx["result"]
        ctx["record"] = record = _ok_record(result, op)
        write_deploy_json(run_dir, result, record)
        # Still inside: if the log cannot take the outcome, the change is undone below.
        target.repository.append_log(target.model, record)
    except BaseException as exc:
        restore_error = None
        try:
            if target.reloads > reloads0 or target.writes > writes0:
                target.apply(before_cfg, before)
            if ctx["published"] is not None and ctx["published"].status == "published":
                target.repository.delete_version(target.model, ctx["published"].version)
        except Exception as rexc:  # report both; the original failure stays the cause
            restore_error = f"{type(rexc).__name__}: {rexc}"
        record = record_of(
            "failed",
            error=str(exc)[:2000],
            restore_error=restore_error,
            labels_after=dict(before.labels),
        )
        with contextlib.suppress(Exception):
            target.repository.append_log(target.model, record)
        atomic_write_json(
            run_dir.ensure().deploy_json, {"action": action, "status": "failed", "record": record}
        )
        if isinstance(exc, GateFailed | VersionConflict) or not isinstance(exc, Exception):
            raise
        state = (
            (
                "previous config and labels restored; stable still serves "
                f"{before.labels.get('stable', '(none)')}"
            )
            if restore_error is None
            else (f"RESTORE FAILED ({restore_error}): check the server's config by hand")
        )
        code = exc.__class__.__name__
        raise DeployFailed(
            f"{action} of {target.model} v{version} failed ({code}: "
            f"{getattr(exc, 'message', exc)}); {state}",
            hint=getattr(exc, "hint", None),
        ) from exc


def apply_retention(cfg: PipelineConfig, target: Target, state: ModelState) -> list[int]:
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
