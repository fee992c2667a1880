"""Promote and rollback: move `stable` (and `canary`) to a version that is already published.

Both check the version from the model repository before any label moves (`integrity`): its
files against the publish record, its manifest, and its golden requests once AVAILABLE. A
version that still answers from memory with damaged files would be an outage at the next
restart of TF Serving.

* promote names the version of its own pipeline (the run directory's export, or `--version`)
  and refuses when the server's canary is another one: an approved promote never ships
  another pipeline's model;
* rollback reads the previous stable from the valid records of the deploy log; with no usable
  history it takes the one loaded version without a label (retention keeps the previous stable
  loaded), or the version named with `--version`. A torn or damaged log never stops it.
"""

from __future__ import annotations

from typing import Any

from tfship.config import PipelineConfig
from tfship.errors import ConfigError, DeployFailed
from tfship.rundir import RunDir
from tfship.serving import golden, integrity
from tfship.serving.actions import promote_state, result, retain
from tfship.serving.models_config import ModelState
from tfship.serving.repository import local_manifest
from tfship.serving.retention import stable_history
from tfship.serving.target import Target, resolve
from tfship.serving.transaction import DeployResult, session, transaction


def _own_version(run_dir: RunDir, version: int | None) -> tuple[int, Any]:
    """(version, its files when this run directory exported it) for promote."""
    try:
        export_dir = golden.latest_export(run_dir.export)
    except Exception:
        export_dir = None
    if export_dir is not None and version in (None, int(export_dir.name)):
        manifest = golden.check_manifest(
            golden.read_manifest(export_dir), version=int(export_dir.name), where=str(export_dir)
        )
        return int(manifest["version"]), local_manifest(export_dir)
    if version is None:
        raise ConfigError(
            f"promote needs the version of its own pipeline, and {run_dir.export} holds no export",
            hint="run it with --run-dir of the run that deployed the canary, or name the "
            "version: `tfship promote --version N`",
        )
    return version, None


def _check_served(target: Target, check: Any, tolerance: float | None) -> Any:
    """Golden requests through `/versions/<v>` on every server (each replica with
    serving.replicas); the check with the largest difference."""
    results = [integrity.check_served(t, check, tolerance) for t in target.per_server()]
    return max(results, key=lambda r: r.max_abs_diff)


def _deployed_by(target: Target, version: int) -> str:
    for r in reversed(target.repository.read_log(target.model)):
        if r.get("action") == "deploy" and r.get("status") == "ok" and r.get("version") == version:
            return f" (deployed by {r.get('who')}, {r.get('pipeline_url') or 'no pipeline'})"
    return ""


def run_promote(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    to: str | None = None,
    reason: str | None = None,
    version: int | None = None,
    lease_wait: float | None = None,
) -> DeployResult:
    """Move `stable` to this pipeline's version, which must be the canary; then retention."""
    own, own_files = _own_version(run_dir, version)
    target = resolve(cfg, to)
    with session(target, "promote", own, lease_wait) as recovered:
        _, before = target.read()
        canary = before.labels.get("canary")
        if canary is None:
            raise DeployFailed(
                f"nothing to promote: {target.model} has no canary (labels "
                f"{dict(before.labels)}); nothing changed",
                hint="run `tfship deploy` first; promote moves stable to the canary",
            )
        if canary != own:
            raise DeployFailed(
                f"the canary of {target.model} is version {canary}"
                f"{_deployed_by(target, canary)}, not this pipeline's version {own}; refusing "
                "to promote another pipeline's model; nothing changed",
                hint="promote from the pipeline that deployed the canary, or deploy this "
                "pipeline's model first",
            )
        check = integrity.check_files(target, own, expected=own_files, why="promote")
        with transaction("promote", run_dir, target, reason, own) as tx:
            before = tx["state"]
            served = None
            if target.client is not None:
                target.client.wait_available([own], deadline=target.load_deadline, poll=target.poll)
                served = _check_served(target, check, cfg.serving.tolerance)
            after = promote_state(before, own)
            target.apply(tx["cfg"], after)
            tx["result"] = result(
                "promote",
                target,
                "ok" if after != before else "unchanged",
                own,
                before,
                after,
                reason=reason,
                golden=served,
                warnings=check.warnings,
                recovered=recovered,
            )
        return retain(cfg, run_dir, target, tx, after)


def _rollback_plan(
    target: Target, before: ModelState, explicit: int | None
) -> tuple[int, str, list[str]]:
    """(version, why, warnings): where rollback points the labels, decided before any change.

    An unpromoted canary (canary != stable) is dropped: canary goes back to stable, which
    never moved. Otherwise stable moves back to the previous stable.
    """
    canary, stable = before.labels.get("canary"), before.labels.get("stable")
    if explicit is not None:
        return explicit, f"stable {stable} to version {explicit} (named with --version)", []
    if stable is not None and canary is not None and canary != stable:
        return stable, f"drop canary {canary}: canary back to stable {stable}", []
    records, problems = target.repository.read_log_checked(target.model)
    warnings = (
        [f"the deploy log has {len(problems)} damaged record(s), skipped: {problems[0]}"]
        if problems
        else []
    )
    history = stable_history(records)
    if stable in history and history.index(stable) >= 1:
        prev = history[history.index(stable) - 1]
        return prev, f"stable {stable} back to the previous stable {prev}", warnings
    unlabelled = [v for v in before.versions if v not in before.labels.values()]
    if stable is not None and len(unlabelled) == 1:
        warnings.append(
            f"the deploy log has no usable stable history ({history}); version {unlabelled[0]} "
            "is the only loaded version without a label, which is where retention keeps the "
            "previous stable"
        )
        prev = unlabelled[0]
        return prev, f"stable {stable} back to version {prev} (from models.config)", warnings
    raise DeployFailed(
        f"no previous stable version of {target.model} to roll back to (stable history "
        f"{history}, labels {dict(before.labels)}, loaded {list(before.versions)}); nothing "
        "changed",
        hint="name the version to roll back to: `tfship rollback --version N`",
    )


def run_rollback(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    to: str | None = None,
    reason: str | None = None,
    version: int | None = None,
    lease_wait: float | None = None,
) -> DeployResult:
    """Drop an unpromoted canary (canary -> stable); else move `stable` and `canary` back to
    the previous stable version (or `version`), checked from the repository first."""
    target = resolve(cfg, to)
    with session(target, "rollback", version, lease_wait) as recovered:
        _, before = target.read()
        goal, plan, warnings = _rollback_plan(target, before, version)
        check = integrity.check_files(target, goal, why="roll back to")
        why = reason or plan
        with transaction("rollback", run_dir, target, why, goal) as tx:
            cfg0, before = tx["cfg"], tx["state"]
            loaded = before.with_versions({*before.versions, goal})
            cfg1 = target.apply(cfg0, loaded)  # waits AVAILABLE before the label may move
            served = None
            if target.client is not None:
                served = _check_served(target, check, cfg.serving.tolerance)
            after = promote_state(loaded, goal)
            target.apply(cfg1, after)
            tx["result"] = result(
                "rollback",
                target,
                "ok",
                goal,
                before,
                after,
                reason=why,
                golden=served,
                warnings=warnings + check.warnings,
                recovered=recovered,
            )
        return retain(cfg, run_dir, target, tx, after)
