"""What publish, deploy, promote and rollback share: the run's export, results, retention."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from tfship.config import PipelineConfig
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.models_config import ModelState
from tfship.serving.retention import apply_retention
from tfship.serving.target import Target
from tfship.serving.transaction import DeployResult, write_deploy_json

log = logging.getLogger(__name__)


def run_export(run_dir: RunDir) -> tuple[Path, dict[str, Any], int]:
    """The run's export, its manifest (checked: `golden.check_manifest`) and its version.

    The version is the directory's name, and the manifest must say the same: a tampered
    manifest can neither choose the published version nor bring an empty golden set.
    """
    export_dir = golden.latest_export(run_dir.export)
    version = int(export_dir.name)
    manifest = golden.check_manifest(
        golden.read_manifest(export_dir), version=version, where=str(export_dir)
    )
    return export_dir, manifest, version


def result(
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


def promote_state(state: ModelState, version: int) -> ModelState:
    return state.with_labels({**state.labels, "stable": version, "canary": version})


def retain(
    cfg: PipelineConfig, run_dir: RunDir, target: Target, tx: dict[str, Any], after: ModelState
) -> DeployResult:
    """Retention after a committed action: a failure is a warning, never a failed deploy."""
    res: DeployResult = tx["result"]
    warnings = list(res.warnings)
    removed: list[int] = []
    versions_after = res.versions_after
    try:
        removed = apply_retention(cfg, target, after)
        versions_after = list(target.read()[1].versions)
    except Exception as exc:  # the labels already moved and are recorded; do not undo that
        msg = (
            f"retention failed after the {res.action} succeeded ({type(exc).__name__}: "
            f"{exc}); old versions may still be loaded or on disk, run `tfship status`"
        )
        log.warning("%s", msg)
        warnings.append(msg)
    final = dataclasses.replace(
        res, removed_versions=removed, versions_after=versions_after, warnings=warnings
    )
    try:
        write_deploy_json(run_dir, final, tx["record"])
    except OSError as exc:  # deploy.json from inside the transaction still describes it
        log.warning("could not update %s after retention: %s", run_dir.deploy_json, exc)
    return final
