"""Publish and deploy (canary); promote and rollback live in `labels`. Each is a transaction.

A label only moves to a version TF Serving already reports AVAILABLE, so a deploy is two
config reloads: add the version (wait AVAILABLE, replay the golden requests through
`/versions/<v>`), then point `canary` at it. Every action holds the repository's lease
(`lease`) and runs in a `transaction`: any failure undoes exactly what it changed and the exit
code says what is true afterwards (9 restored, 8 nothing reached the server, 13 the undo did
not complete). Records in the deploy log and `deploy.json` are written inside it; retention
runs after it, and its failures are warnings. `tfship status` is in `status`.
"""

from __future__ import annotations

import time
from typing import Any

from tfship.config import PipelineConfig
from tfship.errors import ModelError
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.actions import promote_state, result, retain, run_export
from tfship.serving.deploy_gate import check_gate
from tfship.serving.labels import run_promote as run_promote
from tfship.serving.labels import run_rollback as run_rollback
from tfship.serving.repository import local_manifest, manifest_digest
from tfship.serving.retention import stable_history as stable_history
from tfship.serving.target import Target, offline_serve_hint, resolve
from tfship.serving.transaction import DeployResult, publish, session, transaction


def run_publish(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    to: str | None = None,
    allow_ungated: bool = False,
    lease_wait: float | None = None,
) -> DeployResult:
    """Copy the run's export into the model repository (atomic, idempotent). Loads nothing."""
    export_dir, _, version = run_export(run_dir)
    files = local_manifest(export_dir)  # read once: the gate and the copy are bound to it
    check_gate(cfg, run_dir, allow_ungated, export_dir, version, files)
    target = resolve(cfg, to)
    with (
        session(target, "publish", version, lease_wait) as recovered,
        transaction("publish", run_dir, target, None, version) as tx,
    ):
        state = tx["state"]
        pub = publish(tx, target, version, export_dir, files)
        tx["result"] = result(
            "publish",
            target,
            "ok" if pub.status == "published" else "unchanged",
            version,
            state,
            state,
            published=pub,
            seconds={"publish": pub.seconds},
            next_step=f"tfship deploy{' --to ' + to if to else ''}",
            recovered=recovered,
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
    lease_wait: float | None = None,
) -> DeployResult:
    """Publish, load, verify with the golden requests, then label the new version `canary`.

    The first deploy of a model (no `stable` yet) labels it `stable` too. With a server the
    version must reach AVAILABLE and answer the golden requests through `/versions/<v>`
    before any label moves; offline (no serving.rest_url) the C++ loader check replaces that
    and only models.config is written. Refuses an export the gate did not pass (`check_gate`)
    or whose manifest deploy cannot trust (`golden.check_manifest`).
    """
    export_dir, manifest, version = run_export(run_dir)
    # The export's files are hashed once, here: the gate's digest, the verification record's
    # digest and the published copy are all checked against this one reading, so what is
    # published is what was gated and verified (the copy is hashed again and must match it).
    files = local_manifest(export_dir)
    gate = check_gate(cfg, run_dir, allow_ungated, export_dir, version, files)
    target = resolve(cfg, to)
    with session(target, "deploy", version, lease_wait) as recovered:
        t0 = time.monotonic()
        secs: dict[str, float] = {}
        offline_check = None
        with transaction("deploy", run_dir, target, reason, version) as tx:
            cfg0, before = tx["cfg"], tx["state"]
            if not target.online:
                # C++ loader + golden replay; tfship.verify imports TensorFlow only when the
                # check has to run.
                from tfship.verify import verify_export

                # Reused when export verified these exact bytes (tfship.verify_record).
                offline_check = verify_export(export_dir, reuse=True, digest=manifest_digest(files))
                secs["offline_check"] = round(time.monotonic() - t0, 3)
            pub = publish(tx, target, version, export_dir, files)
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
                after = promote_state(after, version)
                target.apply(cfg1, after)
            secs["total"] = round(time.monotonic() - t0, 3)
            tx["result"] = result(
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
                next_step=_next(target, to, promote, version),
                recovered=recovered,
            )
        return retain(cfg, run_dir, target, tx, after) if promote else tx["result"]


def _next(target: Target, to: str | None, promote: bool, version: int) -> str | None:
    if not target.online:
        return f"serve it: {offline_serve_hint(target)}"
    if promote:
        return None
    return f"tfship promote{' --to ' + to if to else ''} --version {version}"


def _verify(
    target: Target,
    manifest: dict[str, Any],
    cfg: PipelineConfig,
    *,
    version: int | None = None,
    label: str | None = None,
) -> golden.GoldenCheck:
    assert target.client is not None
    where = {"version": version} if version is not None else {"label": label}
    checks = []
    for server in target.per_server():  # with serving.replicas: every replica
        check = golden.replay(server.client, manifest, cfg.serving.tolerance, **where)
        if not check.ok:
            path = f"/versions/{version}" if version is not None else f"/labels/{label}"
            on = f" on {server.describe()}" if target.replicas is not None else ""
            raise ModelError(
                f"{target.model}{path}{on} answered the golden requests wrongly: "
                + "; ".join(check.problems),
                hint="the served model differs from the export; run `tfship validate`",
            )
        checks.append(check)
    return max(checks, key=lambda c: c.max_abs_diff)
