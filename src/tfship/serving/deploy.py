"""Publish, deploy (canary), promote, rollback: each a transaction against TF Serving.

A label only moves to a version TF Serving already reports AVAILABLE, so a deploy is two
config reloads: add the version (wait AVAILABLE, replay the golden requests through
`/versions/<v>`), then point `canary` at it. Any failure re-applies the previous config and
labels, un-publishes a version this transaction published, and raises DeployFailed: `stable`
never stops serving. Every action appends a record to the model repository's deploy log and
writes `deploy.json` in the run directory.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfship.config import PipelineConfig
from tfship.errors import DeployFailed, GateFailed, ModelError
from tfship.fsutil import atomic_write_json
from tfship.result import to_jsonable
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.models_config import ModelState
from tfship.serving.repository import PublishResult, VersionConflict, log_record
from tfship.serving.target import Target, resolve

log = logging.getLogger(__name__)
COMPOSE_HINT = "docker compose -f docker/serving/compose.yaml up"
DEPLOYABLE_VERDICTS = ("passed", "passed_with_override")


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

    def render_text(self) -> str:
        where = f" ({self.environment})" if self.environment else ""
        lines = [
            f"{self.action}{where}: {self.model} version {self.version} [{self.status}, {self.mode}]",
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
        if self.next_step:
            lines.append(f"  next: {self.next_step}")
        return "\n".join(lines)


# ---- gate -----------------------------------------------------------------------------------
def check_gate(cfg: PipelineConfig, run_dir: RunDir, allow_ungated: bool) -> str:
    """'passed' / 'passed_with_override' / 'override' / 'ungated (allowed)', or raise GateFailed.

    Fails safe: no gate.json means no gate ran, which is refused unless explicitly allowed
    (`--allow-ungated` or serving.allow_ungated). dry_run/disabled verdicts count as not passed.
    """
    path = run_dir.evaluation / "gate.json"
    allowed = allow_ungated or cfg.serving.allow_ungated
    if not path.is_file():
        if allowed:
            return "ungated (allowed)"
        raise GateFailed(
            f"{path} does not exist: no evaluation gate ran for this model",
            hint="run `tfship evaluate` first, or pass --allow-ungated "
            "(serving.allow_ungated) to deploy without a gate on purpose",
        )
    from tfship.fsutil import read_json

    gate = read_json(path)
    verdict = gate.get("verdict")
    if verdict in DEPLOYABLE_VERDICTS:
        return str(verdict)
    if gate.get("override"):
        return "override"
    if allowed:
        return f"{verdict} (ungated deploy allowed)"
    raise GateFailed(
        f"the evaluation gate said '{verdict}' ({path}); refusing to deploy",
        hint="improve the model, or record an override with `tfship evaluate "
        "--override-reason ...`",
    )


# ---- helpers --------------------------------------------------------------------------------
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


def _retained(state: ModelState, history: list[int]) -> set[int]:
    """Versions that must stay loaded: labelled ones and the previous stable."""
    keep = set(state.labels.values())
    if len(history) >= 2:
        keep.add(history[-2])
    return keep


def _finish(run_dir: RunDir, target: Target, result: DeployResult) -> DeployResult:
    record = log_record(
        result.action,
        result.model,
        environment=result.environment,
        status="ok",
        version=result.version,
        why=result.reason,
        labels_before=result.labels_before,
        labels_after=result.labels_after,
        versions_before=result.versions_before,
        versions_after=result.versions_after,
    )
    target.repository.append_log(result.model, record)
    atomic_write_json(run_dir.ensure().deploy_json, {**to_jsonable(result), "record": record})
    return result


@contextlib.contextmanager
def _transaction(
    action: str, run_dir: RunDir, target: Target, reason: str | None, version: int | None
) -> Iterator[dict[str, Any]]:
    """Restore the previous config and labels on any failure; then raise DeployFailed."""
    before_cfg, before = target.read()
    ctx: dict[str, Any] = {"cfg": before_cfg, "state": before, "published": None}
    reloads0 = target.reloads
    try:
        yield ctx
    except BaseException as exc:
        restore_error = None
        try:
            if not target.online or target.reloads > reloads0:
                target.apply(before_cfg, before)  # offline this only rewrites models.config
            if ctx["published"] is not None and ctx["published"].status == "published":
                target.repository.delete_version(target.model, ctx["published"].version)
        except Exception as rexc:  # report both; the original failure stays the cause
            restore_error = f"{type(rexc).__name__}: {rexc}"
        record = log_record(
            action,
            target.model,
            environment=target.environment,
            status="failed",
            version=version,
            why=reason,
            error=str(exc)[:2000],
            restore_error=restore_error,
            labels_before=dict(before.labels),
            labels_after=dict(before.labels),
            versions_before=list(before.versions),
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


def _export(run_dir: RunDir) -> tuple[Path, dict[str, Any]]:
    export_dir = golden.latest_export(run_dir.export)
    return export_dir, golden.read_manifest(export_dir)


# ---- stages ---------------------------------------------------------------------------------
def run_publish(
    cfg: PipelineConfig, run_dir: RunDir, *, to: str | None = None, allow_ungated: bool = False
) -> DeployResult:
    """Copy the run's export into the model repository (atomic, idempotent). Loads nothing."""
    check_gate(cfg, run_dir, allow_ungated)
    target = resolve(cfg, to)
    export_dir, manifest = _export(run_dir)
    version = int(manifest.get("version") or export_dir.name)
    _, state = target.read()
    pub = target.repository.publish(target.model, version, export_dir)
    return _finish(
        run_dir,
        target,
        DeployResult(
            "publish",
            target.model,
            to,
            "server" if target.online else "offline",
            "ok" if pub.status == "published" else "unchanged",
            version,
            dict(state.labels),
            dict(state.labels),
            list(state.versions),
            list(state.versions),
            published=pub,
            seconds={"publish": pub.seconds},
            next_step=f"tfship deploy{' --to ' + to if to else ''}",
        ),
    )


def run_deploy(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    to: str | None = None,
    reason: str | None = None,
    allow_ungated: bool = False,
    promote: bool = False,
) -> DeployResult:
    """Publish, load, verify with the golden requests, then label the new version `canary`.

    The first deploy of a model (no `stable` yet) labels it `stable` too. With a server the
    version must reach AVAILABLE and answer the golden requests through `/versions/<v>`
    before any label moves; offline (no serving.rest_url) the C++ loader check replaces that
    and only models.config is written.
    """
    gate = check_gate(cfg, run_dir, allow_ungated)
    target = resolve(cfg, to)
    export_dir, manifest = _export(run_dir)
    version = int(manifest.get("version") or export_dir.name)
    t0 = time.monotonic()
    secs: dict[str, float] = {}
    offline_check = None
    with _transaction("deploy", run_dir, target, reason, version) as tx:
        cfg0, before = tx["cfg"], tx["state"]
        if not target.online:
            from tfship.export import verify_export  # C++ loader + golden replay

            offline_check = verify_export(export_dir)
            secs["offline_check"] = round(time.monotonic() - t0, 3)
        tx["published"] = pub = target.repository.publish(target.model, version, export_dir)
        if pub.status == "unchanged" and version in before.versions:
            tx["published"] = None  # it was live before this deploy: never un-publish it
        secs["publish"] = pub.seconds
        loaded = before.with_versions({*before.versions, version})
        t1 = time.monotonic()
        cfg1 = target.apply(cfg0, loaded)
        check = None
        if target.client is not None:
            secs["available"] = round(time.monotonic() - t1, 3)
            check = _verify(target, manifest, cfg, version=version)
        labels = {**before.labels, "canary": version}
        labels.setdefault("stable", version)
        after = loaded.with_labels(labels)
        target.apply(cfg1, after)
        if target.client is not None:
            _verify(target, manifest, cfg, label="canary")
        if promote:
            after = _promote_state(target, after, version)
            target.apply(cfg1, after)
        secs["total"] = round(time.monotonic() - t0, 3)
    result = DeployResult(
        "deploy",
        target.model,
        to,
        "server" if target.online else "offline",
        "ok",
        version,
        dict(before.labels),
        dict(after.labels),
        list(before.versions),
        list(after.versions),
        reason=f"{reason or ''} [gate: {gate}]".strip(),
        published=pub,
        golden=check,
        offline_check=offline_check,
        seconds=secs,
        next_step=(None if promote else f"tfship promote{' --to ' + to if to else ''}")
        if target.online
        else f"serve it: {COMPOSE_HINT}",
    )
    _finish(run_dir, target, result)
    if promote:
        _apply_retention(cfg, target, after)
    return result


def _verify(
    target: Target,
    manifest: dict[str, Any],
    cfg: PipelineConfig,
    *,
    version: int | None = None,
    label: str | None = None,
) -> golden.GoldenCheck:
    assert target.client is not None
    outputs = target.client.predict(golden.golden_inputs(manifest), version=version, label=label)
    check = golden.compare(manifest, outputs, cfg.serving.tolerance)
    if not check.ok:
        where = f"/versions/{version}" if version is not None else f"/labels/{label}"
        raise ModelError(
            f"{target.model}{where} answered the golden requests wrongly: "
            + "; ".join(check.problems),
            hint="the served model differs from the export; run `tfship validate`",
        )
    return check


def _promote_state(target: Target, state: ModelState, version: int) -> ModelState:
    return state.with_labels({**state.labels, "stable": version, "canary": version})


def _apply_retention(cfg: PipelineConfig, target: Target, state: ModelState) -> list[int]:
    """Unload what is neither labelled nor previous-stable; delete beyond the last N on disk."""
    history = stable_history(target.repository.read_log(target.model))
    protected = _retained(state, history)
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


def run_promote(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    to: str | None = None,
    reason: str | None = None,
    version: int | None = None,
) -> DeployResult:
    """Move `stable` to the canary (or `version`, which must be loaded), then apply retention."""
    target = resolve(cfg, to)
    _, before = target.read()
    version = before.labels.get("canary") if version is None else version
    if version is None or version not in before.versions:
        raise DeployFailed(
            f"nothing to promote: {target.model} has no canary version loaded "
            f"(labels {dict(before.labels)}, versions {list(before.versions)})",
            hint="run `tfship deploy` first; promote moves stable to the canary",
        )
    with _transaction("promote", run_dir, target, reason, version):
        if target.client is not None:
            target.client.wait_available([version], deadline=target.load_deadline, poll=target.poll)
        after = _promote_state(target, before, version)
        target.apply(target.read()[0], after)
    result = DeployResult(
        "promote",
        target.model,
        to,
        "server" if target.online else "offline",
        "ok" if after != before else "unchanged",
        version,
        dict(before.labels),
        dict(after.labels),
        list(before.versions),
        list(after.versions),
        reason=reason,
    )
    _finish(run_dir, target, result)
    removed = _apply_retention(cfg, target, after)
    _, final = target.read()
    return DeployResult(
        **{**result.__dict__, "removed_versions": removed, "versions_after": list(final.versions)}
    )


def run_rollback(
    cfg: PipelineConfig, run_dir: RunDir, *, to: str | None = None, reason: str | None = None
) -> DeployResult:
    """Move `stable` (and `canary`) back to the previous stable version."""
    target = resolve(cfg, to)
    _, before = target.read()
    history = stable_history(target.repository.read_log(target.model))
    if len(history) < 2:
        raise DeployFailed(
            f"no previous stable version of {target.model} to roll back to "
            f"(stable history {history})",
            hint="rollback needs at least two promotions in the deploy log",
        )
    prev = history[-2]
    if not target.repository.is_complete(target.model, prev):
        raise DeployFailed(
            f"previous stable version {prev} is no longer in "
            f"{target.repository.location(target.model)}",
            hint=f"re-publish version {prev} from its run directory first",
        )
    with _transaction("rollback", run_dir, target, reason, prev):
        cfg0, _ = target.read()
        loaded = before.with_versions({*before.versions, prev})
        cfg1 = target.apply(cfg0, loaded)  # waits AVAILABLE before the label may move
        after = loaded.with_labels({**before.labels, "stable": prev, "canary": prev})
        target.apply(cfg1, after)
    result = DeployResult(
        "rollback",
        target.model,
        to,
        "server" if target.online else "offline",
        "ok",
        prev,
        dict(before.labels),
        dict(after.labels),
        list(before.versions),
        list(after.versions),
        reason=reason,
    )
    _finish(run_dir, target, result)
    removed = _apply_retention(cfg, target, after)
    _, final = target.read()
    return DeployResult(
        **{**result.__dict__, "removed_versions": removed, "versions_after": list(final.versions)}
    )


@dataclass(frozen=True)
class StatusResult:
    """Labels and versions: what models.config says and what the server reports."""

    model: str
    environment: str | None
    repository: str
    config_versions: list[int]
    labels: dict[str, int]
    on_disk: list[int]
    server: dict[int, str] | None
    stable_history: list[int]
    last_actions: list[dict[str, Any]]

    def render_text(self) -> str:
        lines = [
            f"{self.model} ({self.environment or 'default'}) in {self.repository}",
            f"  labels     {self.labels or '{}'}",
            f"  configured {self.config_versions}   on disk {self.on_disk}",
            f"  server     {self.server if self.server is not None else 'offline (no rest_url)'}",
        ]
        for r in self.last_actions:
            lines.append(
                f"  {r.get('at')} {r.get('action')} {r.get('status')} v{r.get('version')} "
                f"by {r.get('who')}: {r.get('why') or ''}"
            )
        return "\n".join(lines)


def run_status(cfg: PipelineConfig, *, to: str | None = None, last: int = 5) -> StatusResult:
    target = resolve(cfg, to)
    _, state = target.read()
    server = None
    if target.client is not None:
        server = {s.version: s.state for s in target.client.status()}
    records = target.repository.read_log(target.model)
    return StatusResult(
        target.model,
        to,
        target.repository.location(target.model),
        list(state.versions),
        dict(state.labels),
        target.repository.versions(target.model),
        server,
        stable_history(records),
        records[-last:],
    )
