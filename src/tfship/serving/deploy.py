"""Publish, deploy (canary), promote, rollback: each a transaction against TF Serving.

A label only moves to a version TF Serving already reports AVAILABLE, so a deploy is two
config reloads: add the version (wait AVAILABLE, replay the golden requests through
`/versions/<v>`), then point `canary` at it. Any failure re-applies the previous config and
labels, un-publishes a version this transaction published, and raises DeployFailed: `stable`
never stops serving (`transaction`). Every action appends a record to the model repository's
deploy log and writes `deploy.json` in the run directory. `tfship status` is in `status`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tfship.config import PipelineConfig
from tfship.errors import DeployFailed, GateFailed, ModelError
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.models_config import ModelState
from tfship.serving.target import Target, offline_serve_hint, resolve
from tfship.serving.transaction import (
    DeployResult,
    apply_retention,
    finish,
    stable_history,
    transaction,
)

log = logging.getLogger(__name__)
DEPLOYABLE_VERDICTS = ("passed", "passed_with_override")


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
    return finish(
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
        else f"serve it: {offline_serve_hint(target)}",
    )
    finish(run_dir, target, result)
    if promote:
        apply_retention(cfg, target, after)
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
    with transaction("promote", run_dir, target, reason, version):
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
    finish(run_dir, target, result)
    removed = apply_retention(cfg, target, after)
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
    with transaction("rollback", run_dir, target, reason, prev):
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
    finish(run_dir, target, result)
    removed = apply_retention(cfg, target, after)
    _, final = target.read()
    return DeployResult(
        **{**result.__dict__, "removed_versions": removed, "versions_after": list(final.versions)}
    )
