"""Publish, deploy (canary), promote, rollback: each a transaction against TF Serving.

A label only moves to a version TF Serving already reports AVAILABLE, so a deploy is two
config reloads: add the version (wait AVAILABLE, replay the golden requests through
`/versions/<v>`), then point `canary` at it. Any failure re-applies the previous config and
labels, un-publishes a version this transaction published, and raises DeployFailed: `stable`
never stops serving (`transaction`). Every action's records in the model repository's deploy
log and `deploy.json` in the run directory are written inside its transaction; retention runs
after it, and its failures are warnings. `tfship status` is in `status`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from tfship.config import PipelineConfig
from tfship.errors import DeployFailed, ModelError
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.deploy_gate import check_gate
from tfship.serving.models_config import ModelState
from tfship.serving.target import Target, offline_serve_hint, resolve
from tfship.serving.transaction import (
    DeployResult,
    apply_retention,
    stable_history,
    transaction,
    write_deploy_json,
)

log = logging.getLogger(__name__)


def _export(run_dir: RunDir) -> tuple[Path, dict[str, Any], int]:
    export_dir = golden.latest_export(run_dir.export)
    manifest = golden.read_manifest(export_dir)
    return export_dir, manifest, int(manifest.get("version") or export_dir.name)


def _result(
    action: str,
    target: Target,
    status: str,
    version: int | None,
    before: ModelState,
    after: ModelState,
    **extra: Any,
) -> DeployResult:
    return DeployResult(
        action,
        target.model,
        target.environment,
        "server" if target.online else "offline",
        status,
        version,
        dict(before.labels),
        dict(after.labels),
        list(before.versions),
        list(after.versions),
        **extra,
    )


def _retain(
    cfg: PipelineConfig, run_dir: RunDir, target: Target, tx: dict[str, Any], after: ModelState
) -> DeployResult:
    """Retention after a committed action: a failure is a warning, never a failed deploy."""
    result: DeployResult = tx["result"]
    warnings = list(result.warnings)
    removed: list[int] = []
    versions_after = result.versions_after
    try:
        removed = apply_retention(cfg, target, after)
        versions_after = list(target.read()[1].versions)
    except Exception as exc:  # the labels already moved and are recorded; do not undo that
        msg = (
            f"retention failed after the {result.action} succeeded ({type(exc).__name__}: "
            f"{exc}); old versions may still be loaded or on disk, run `tfship status`"
        )
        log.warning("%s", msg)
        warnings.append(msg)
    final = dataclasses.replace(
        result, removed_versions=removed, versions_after=versions_after, warnings=warnings
    )
    try:
        write_deploy_json(run_dir, final, tx["record"])
    except OSError as exc:  # deploy.json from inside the transaction still describes it
        log.warning("could not update %s after retention: %s", run_dir.deploy_json, exc)
    return final


# ---- stages ---------------------------------------------------------------------------------
def run_publish(
    cfg: PipelineConfig, run_dir: RunDir, *, to: str | None = None, allow_ungated: bool = False
) -> DeployResult:
    """Copy the run's export into the model repository (atomic, idempotent). Loads nothing."""
    export_dir, _, version = _export(run_dir)
    check_gate(cfg, run_dir, allow_ungated, export_dir, version)
    target = resolve(cfg, to)
    with transaction("publish", run_dir, target, None, version) as tx:
        state = tx["state"]
        tx["published"] = pub = target.repository.publish(target.model, version, export_dir)
        tx["result"] = _result(
            "publish",
            target,
            "ok" if pub.status == "published" else "unchanged",
            version,
            state,
            state,
            published=pub,
            seconds={"publish": pub.seconds},
            next_step=f"tfship deploy{' --to ' + to if to else ''}",
        )
    return tx["result"]


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
    and only models.config is written. Refuses an export the gate did not pass (`check_gate`).
    """
    export_dir, manifest, version = _export(run_dir)
    gate = check_gate(cfg, run_dir, allow_ungated, export_dir, version)
    target = resolve(cfg, to)
    t0 = time.monotonic()
    secs: dict[str, float] = {}
    offline_check = None
    with transaction("deploy", run_dir, target, reason, version) as tx:
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
            after = _promote_state(after, version)
            target.apply(cfg1, after)
        secs["total"] = round(time.monotonic() - t0, 3)
        tx["result"] = _result(
            "deploy",
            target,
            "ok",
            version,
            before,
            after,
            reason=f"{reason or ''} [gate: {gate}]".strip(),
            published=pub,
            golden=check,
            offline_check=offline_check,
            seconds=secs,
            next_step=(None if promote else f"tfship promote{' --to ' + to if to else ''}")
            if target.online
            else f"serve it: {offline_serve_hint(target)}",
        )
    return _retain(cfg, run_dir, target, tx, after) if promote else tx["result"]


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


def _promote_state(state: ModelState, version: int) -> ModelState:
    return state.with_labels({**state.labels, "stable": version, "canary": version})


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
    with transaction("promote", run_dir, target, reason, version) as tx:
        before = tx["state"]
        if target.client is not None:
            target.client.wait_available([version], deadline=target.load_deadline, poll=target.poll)
        after = _promote_state(before, version)
        target.apply(tx["cfg"], after)
        tx["result"] = _result(
            "promote",
            target,
            "ok" if after != before else "unchanged",
            version,
            before,
            after,
            reason=reason,
        )
    return _retain(cfg, run_dir, target, tx, after)


def _rollback_plan(target: Target, before: ModelState) -> tuple[int, str]:
    """(version, why): where rollback points the labels, checked before anything changes.

    An unpromoted canary (canary != stable) is dropped: canary goes back to stable, which
    never moved. Otherwise stable moves back to the previous stable from the deploy log.
    """
    canary, stable = before.labels.get("canary"), before.labels.get("stable")
    if stable is not None and canary is not None and canary != stable:
        return stable, f"drop canary {canary}: canary back to stable {stable}"
    history = stable_history(target.repository.read_log(target.model))
    if len(history) < 2:
        raise DeployFailed(
            f"no previous stable version of {target.model} to roll back to "
            f"(stable history {history}, labels {dict(before.labels)})",
            hint="rollback needs at least two promotions in the deploy log",
        )
    prev = history[-2]
    if not target.repository.is_complete(target.model, prev):
        raise DeployFailed(
            f"previous stable version {prev} is no longer in "
            f"{target.repository.location(target.model)}",
            hint=f"re-publish version {prev} from its run directory first",
        )
    return prev, f"stable {stable} back to the previous stable {prev}"


def run_rollback(
    cfg: PipelineConfig, run_dir: RunDir, *, to: str | None = None, reason: str | None = None
) -> DeployResult:
    """Drop an unpromoted canary (canary -> stable); else move `stable` and `canary` back to
    the previous stable version. Then apply retention."""
    target = resolve(cfg, to)
    _, before = target.read()
    version, plan = _rollback_plan(target, before)
    why = reason or plan
    with transaction("rollback", run_dir, target, why, version) as tx:
        cfg0, before = tx["cfg"], tx["state"]
        loaded = before.with_versions({*before.versions, version})
        cfg1 = target.apply(cfg0, loaded)  # waits AVAILABLE before the label may move
        after = _promote_state(loaded, version)
        target.apply(cfg1, after)
        tx["result"] = _result(
            "rollback",
            target,
            "ok",
            version,
            before,
            after,
            reason=why,
        )
    return _retain(cfg, run_dir, target, tx, after)
