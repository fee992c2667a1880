"""Deploy's gate check: only a model the evaluation gate passed, and only that model, ships.

`gate.json` (written by `tfship evaluate` / `tfship gate`) must say `passed` or
`passed_with_override`, and its candidate must be the export being deployed: same version and
same files (a digest over every file; older gate.json files: the tfship manifest).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tfship.config import PipelineConfig, trust
from tfship.errors import ConfigError, GateFailed
from tfship.fsutil import read_json
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.repository import FileManifest, manifest_digest, tree_digest

# Only these verdicts let a model out. An override record alone does not: gate.json keeps one
# (`applied: false`) whenever a reason was given, also for dry_run/disabled/passing gates.
DEPLOYABLE_VERDICTS = ("passed", "passed_with_override")

log = logging.getLogger(__name__)


def _not_this_export(
    gate: dict[str, Any], export_dir: Path, version: int, files: FileManifest | None = None
) -> str | None:
    """Why gate.json's candidate is not `export_dir`, or None when it is.

    The version must match, and the content too: the candidate's digest (sha256 over every
    file) when gate.json has one, else its tfship manifest (which carries created_at).
    `files`: the export's files as the caller read them (`local_manifest`), else read here.
    """
    cand = gate.get("candidate") or {}
    what = f"{cand.get('path')} version {cand.get('version')}"
    if cand.get("version") != version:
        return f"the gate judged {what}, not version {version} ({export_dir})"
    if cand.get("digest"):
        digest = manifest_digest(files) if files is not None else tree_digest(export_dir)
        if cand["digest"] != digest:
            return f"the gate judged {what}, and {export_dir} has different files"
        return None
    if cand.get("manifest"):
        if cand["manifest"] != golden.read_manifest(export_dir):
            return f"the gate judged {what}, and {export_dir} has a different manifest"
        return None
    return "gate.json does not identify the model it judged (no candidate digest or manifest)"


def _check_ungated_flag() -> None:
    # The flag loosens *whether* a model ships, like a verdict field: a job script that expands
    # a CI variable into it must not deploy an ungated model in a job no person started.
    ctx = trust.context()
    if ctx.in_ci and not ctx.started_by_person:
        raise ConfigError(
            "--allow-ungated was given in a CI job that no person started; an ungated deploy "
            "must be a person's decision",
            hint="run the deploy as a manual job (GitLab) / workflow_dispatch (GitHub), or "
            "commit serving.allow_ungated: true to pipeline.yaml through a merge request",
        )
    log.warning("deploying without a passed gate on purpose (%s)", ctx.describe())


def check_gate(
    cfg: PipelineConfig,
    run_dir: RunDir,
    allow_ungated: bool,
    export_dir: Path | None = None,
    version: int | None = None,
    files: FileManifest | None = None,
) -> str:
    """'passed' / 'passed_with_override' / '... (ungated deploy allowed)', or raise GateFailed.

    Fails safe: no gate.json means no gate ran, which is refused unless explicitly allowed
    (`--allow-ungated` or serving.allow_ungated). dry_run/disabled verdicts count as not passed,
    whatever override they record. With `export_dir`, gate.json must be about that export
    (same version and files), so a gate passed by one model never lets another one out;
    `files`: its files as the caller already read them (`local_manifest(export_dir)`).
    """
    path = run_dir.evaluation / "gate.json"
    if allow_ungated:
        _check_ungated_flag()
    allowed = allow_ungated or cfg.serving.allow_ungated
    if not path.is_file():
        if allowed:
            return "ungated (allowed)"
        raise GateFailed(
            f"{path} does not exist: no evaluation gate ran for this model",
            hint="run `tfship evaluate` first, or pass --allow-ungated "
            "(serving.allow_ungated) to deploy without a gate on purpose",
        )
    gate = read_json(path)
    verdict = gate.get("verdict")
    if verdict not in DEPLOYABLE_VERDICTS:
        if allowed:
            return f"{verdict} (ungated deploy allowed)"
        override = gate.get("override") or {}
        unused = (
            f"; the override recorded by {override.get('approver')} was not applied "
            f"(run mode {gate.get('run_mode')})"
            if override
            else ""
        )
        raise GateFailed(
            f"the evaluation gate said '{verdict}' ({path}){unused}; refusing to deploy",
            hint="improve the model, or, with gate.run_mode enabled, record an override with "
            "`tfship evaluate --override-reason ...`",
        )
    if export_dir is not None:
        mismatch = _not_this_export(gate, export_dir, version or int(export_dir.name), files)
        if mismatch:
            if allowed:
                return f"{verdict} for another export (ungated deploy allowed)"
            raise GateFailed(
                f"{path} is not about the export being deployed: {mismatch}; refusing to deploy",
                hint="run `tfship evaluate` on this run directory's export, then deploy again",
            )
    return str(verdict)
