"""The evaluation gate: thresholds and the champion decide whether a model may go further.

Fails safe (STYLE.md #6): no thresholds is a configuration error, never a pass; a first run
(no champion) is stated, and only the absolute thresholds apply; a NaN metric fails its check
with the task's reason; a champion that could not be scored on this data ("incomparable") fails
every change threshold. Metric directions come from the task (`cfg.task_obj`). Slice thresholds
(`gate.slices`, TFMA-style) must hold on every gated slice of their feature; a feature with no
gated slice fails (nothing was measured). `gate.data.drift: fail` adds the data stage's drift
against the champion's statistics as checks (tfship.evaluation.data_gate); `report` lists it in
gate.json's `data` only.

Verdicts (`gate.json` "verdict") and exit codes:

=======================  ====  ===============================================================
verdict                  exit  meaning
=======================  ====  ===============================================================
passed                   0     every check passed (run_mode enabled or dry_run)
failed                   7     at least one check failed (run_mode enabled, no override)
passed_with_override     0     checks failed, but `--override-reason` let it pass (recorded)
dry_run_failed           0     checks failed in run_mode dry_run: reported, pipeline goes on
disabled                 0     run_mode disabled: no verdict; checks are recorded for reading
(ConfigError)            3     no thresholds, unusable thresholds, empty override reason,
                               an override in a CI job no person started; in CI, gate.change
                               with no champion (no repository, or no label without
                               gate.first_run)
=======================  ====  ===============================================================

gate.json records where each threshold came from (`source` on every check: the committed
pipeline.yaml at a commit, or the variable / flag and who set it), the run mode's source
(`run_mode_source`) and every non-default field's source (`config_sources`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tfship import env
from tfship.config import GateConfig, PipelineConfig, trust
from tfship.errors import ConfigError, DataError, ExitCode
from tfship.evaluation.checks import Check, evaluate_checks
from tfship.evaluation.data_gate import data_checks
from tfship.fsutil import atomic_write_json, read_json
from tfship.rundir import RunDir

__all__ = ["VERDICTS", "Check", "GateResult", "decide", "evaluate_checks", "run_gate"]

VERDICTS: dict[str, ExitCode] = {
    "passed": ExitCode.OK,
    "failed": ExitCode.GATE_FAILED,
    "passed_with_override": ExitCode.OK,
    "dry_run_failed": ExitCode.OK,
    "disabled": ExitCode.OK,
}


@dataclass(frozen=True)
class Override:
    reason: str
    approver: str
    approver_source: str
    applied: bool  # False when the gate passed anyway (recorded, not needed)
    at: str


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict and every check behind it."""

    verdict: str
    run_mode: str
    checks: tuple[Check, ...]
    first_run: bool
    champion_note: str
    override: Override | None
    gate_json: Path

    @property
    def exit_code(self) -> int:
        return int(VERDICTS[self.verdict])

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def render_text(self) -> str:
        lines = [f"gate: {self.verdict} ({len(self.checks)} checks, {len(self.failed)} failed)"]
        lines.append(f"  {self.champion_note}")
        lines.extend(
            f"  FAILED {c.metric}{f' by {c.feature}' if c.feature else ''}: {c.why}"
            for c in self.failed
        )
        if self.override is not None:
            lines.append(f"  override by {self.override.approver}: {self.override.reason}")
        lines.append(f"  wrote {self.gate_json}")
        return "\n".join(lines)


def _override(reason: str | None, environ: Any) -> tuple[str, str, str] | None:
    """(reason, approver, where the approver came from), or None without an override."""
    origin = "--override-reason"
    if reason is None:
        reason = env.get("TFSHIP_GATE_OVERRIDE_REASON", environ=environ)
        origin = "TFSHIP_GATE_OVERRIDE_REASON"
        if reason is None:
            return None
    ctx = trust.context(environ)
    if not ctx.started_by_person:
        # A variable left in the CI settings (or expanded into the flag by a job script) would
        # pass every failed gate. A merge-request pipeline does not count: it needs no override.
        raise ConfigError(
            f"{origin} is set in a CI job no person started; an override must come from "
            "someone who can be named",
            hint="remove it from the CI/CD variables and run the manual gate-override job "
            "(ci/gate-override; GitLab manual job or GitHub workflow_dispatch), which records "
            "who approved it",
        )
    if not reason.strip():
        raise ConfigError(
            "--override-reason is empty; an override must say why the failed gate may pass",
            hint='e.g. --override-reason "accuracy drop accepted: new label set, see #123"',
        )
    return reason.strip(), ctx.person or "unknown", ctx.person_source


def decide(
    gate: GateConfig,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    *,
    override_reason: str | None = None,
    environ: Any = None,
    directions: Mapping[str, str] | None = None,
    notes: Mapping[str, str] | None = None,
    slices: Mapping[str, Any] | None = None,
    incomparable: str | None = None,
    extra: Sequence[Check] = (),
) -> tuple[str, list[Check], Override | None]:
    """Verdict, checks and override record for one candidate (see the table above).

    `directions`, `notes`, `slices` and `incomparable` as for `evaluate_checks`; `extra`:
    checks decided elsewhere (`gate.data`, tfship.evaluation.data_gate) that count alike.
    """
    sliced = any(sl.absolute for sl in gate.slices)
    if gate.run_mode != "disabled":
        if not gate.absolute and not gate.change and not sliced:
            raise ConfigError(
                "the evaluation gate has no thresholds; refusing to pass an unchecked model",
                hint="add gate.absolute (e.g. accuracy: {min: 0.95}) to pipeline.yaml, "
                "or set gate.run_mode: disabled on purpose",
            )
        if champion is None and incomparable is None and not gate.absolute and not sliced:
            raise ConfigError(
                "no champion yet (first run) and no gate.absolute thresholds: nothing to check",
                hint="add absolute thresholds so a first model is checked too",
            )
    checks = evaluate_checks(
        gate,
        candidate,
        champion,
        directions=directions,
        notes=notes,
        slices=slices,
        incomparable=incomparable,
    )
    checks.extend(extra)
    any_failed = any(not c.passed for c in checks)
    ov = _override(override_reason, environ)
    record = None
    if ov is not None:
        applied = any_failed and gate.run_mode == "enabled"
        at = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        record = Override(ov[0], ov[1], ov[2], applied, at)
    if gate.run_mode == "disabled":
        verdict = "disabled"
    elif not any_failed:
        verdict = "passed"
    elif gate.run_mode == "dry_run":
        verdict = "dry_run_failed"
    elif record is not None:
        verdict = "passed_with_override"
    else:
        verdict = "failed"
    return verdict, checks, record


def _require_champion(cfg: PipelineConfig, metrics: dict[str, Any], environ: Any) -> None:
    """In CI, change thresholds that found no champion fail safe instead of being skipped.

    Without this, a CI job that was never given the model repository (or a variable pointing
    the champion at an empty directory) passes every model that meets the absolute thresholds,
    however much worse than the served one. Local runs and merge-request pipelines (nothing
    they decide is deployed) report the first run as before.
    """
    gate = cfg.gate
    if not gate.change or gate.run_mode == "disabled" or metrics.get("champion"):
        return
    ctx = trust.context(environ)
    if not ctx.in_ci or ctx.merge_request:
        return
    note = metrics.get("champion_note") or "no champion was found"
    if metrics.get("no_repository"):
        raise ConfigError(
            f"gate.change is configured but this CI job has no model repository to find the "
            f"champion in: {note}",
            hint="give the evaluate job the repository the deploy job publishes to "
            "(TFSHIP_GATE_CHAMPION_REPOSITORY or serving.model_repository, with read "
            "credentials); see docs/ci.md",
        )
    if not gate.first_run:
        raise ConfigError(
            f"gate.change is configured but there is no champion to compare with ({note}); "
            "in CI that is refused unless this is the project's first deploy",
            hint="for the first deploy commit `gate.first_run: true` to pipeline.yaml (remove "
            "it once a model is labelled), or check gate.champion_repository and "
            "gate.champion_label",
        )


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    # metrics.json writes NaN as null (strict JSON); the gate compares NaN, which fails.
    return {k: math.nan if v is None else float(v) for k, v in values.items()}


def _strict(doc: dict[str, Any]) -> dict[str, Any]:
    """A check for gate.json: NaN as null (strict JSON), the reason is in `why`."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in doc.items()}


def run_gate(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    override_reason: str | None = None,
    environ: Any = None,
) -> GateResult:
    """Apply `cfg.gate` to `evaluation/metrics.json`; write `evaluation/gate.json`.

    Returns the result whatever the verdict (its `exit_code` is 7 for "failed"); raises
    ConfigError for a gate that cannot decide (no thresholds).
    """
    metrics_path = run_dir.evaluation / "metrics.json"
    if not metrics_path.is_file():
        raise DataError(
            f"{metrics_path} does not exist; the gate needs the evaluation's metrics",
            hint="run `tfship evaluate` first (it also applies the gate)",
        )
    metrics = read_json(metrics_path)
    cand = metrics["candidate"]
    champ = metrics.get("champion")
    _require_champion(cfg, metrics, environ)
    incomparable = champ.get("incomparable") if champ else None
    ctx = trust.context(environ)
    drift_checks, data_summary = data_checks(
        cfg.gate, run_dir.root, reference_required=ctx.in_ci and not ctx.merge_request
    )
    verdict, checks, override = decide(
        cfg.gate,
        _numbers(cand["metrics"]),
        _numbers(champ["metrics"]) if champ and not incomparable else None,
        override_reason=override_reason,
        environ=environ,
        directions=cfg.task_obj.metric_directions(),
        notes=cand.get("notes") or metrics.get("notes") or {},
        slices=cand.get("slices") or metrics.get("slices") or {},
        incomparable=incomparable,
        extra=drift_checks,
    )
    sources = cfg.sources
    checks = [replace(c, source=sources.of(c.config_key)) for c in checks]
    # In CI without a repository there is no champion because nothing was configured: that
    # is not a first run, and gate.json says so (`no_repository`, `champion_note`).
    no_repository = bool(metrics.get("no_repository"))
    first_run = champ is None and not no_repository
    out = run_dir.evaluation / "gate.json"
    atomic_write_json(
        out,
        {
            "schema": "tfship-gate/1",
            "verdict": verdict,
            "exit_code": int(VERDICTS[verdict]),
            "run_mode": cfg.gate.run_mode,
            "run_mode_source": sources.of("gate.run_mode"),
            "model_name": cfg.project.model_name,
            "first_run": first_run,
            "no_repository": no_repository,
            "champion_note": metrics.get("champion_note", ""),
            # deploy refuses an export whose version or digest differs from this candidate.
            "candidate": {
                "path": cand["path"],
                "version": cand["version"],
                "digest": cand.get("digest"),
                "manifest": cand.get("manifest"),
            },
            "champion": None
            if champ is None
            else {
                "path": champ["path"],
                "version": champ["version"],
                "source": champ.get("source"),
                "label": champ.get("label"),
                "manifest": champ.get("manifest"),
                "incomparable": champ.get("incomparable"),
            },
            "checks": [_strict(asdict(c)) for c in checks],
            "failed": [
                f"{c.kind}:{c.feature}:{c.metric}" if c.feature else f"{c.kind}:{c.metric}"
                for c in checks
                if not c.passed
            ],
            "override": None if override is None else asdict(override),
            # gate.data: drift against the champion's statistics (data.drift.json), or None.
            "data": data_summary,
            # Every non-default field and where it came from (file@commit, variable + who).
            "config_sources": sources.to_dict(),
            "decided_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        },
    )
    return GateResult(
        verdict,
        cfg.gate.run_mode,
        tuple(checks),
        first_run,
        metrics.get("champion_note", ""),
        override,
        out,
    )


@dataclass(frozen=True)
class EvaluationOutcome:
    """evaluate + gate + report (+ comment): what `tfship evaluate` and `tfship run` do."""

    evaluation: Any  # tfship.evaluate.EvaluateResult
    gate: GateResult
    report: Any  # tfship.report.ReportResult
    comment: Any = None  # tfship.mr_comment.PostResult when --post

    @property
    def exit_code(self) -> int:
        # Posting the comment never changes the verdict's exit code.
        return self.gate.exit_code

    def render_text(self) -> str:
        parts = [self.evaluation.render_text(), self.gate.render_text(), self.report.render_text()]
        if self.comment is not None:
            parts.append(self.comment.render_text())
        return "\n".join(parts)


def evaluate_and_gate(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    champion: str | Path | None = None,
    model: str | Path | None = None,
    splits: Any = None,
    override_reason: str | None = None,
    post: bool = False,
    environ: Any = None,
) -> EvaluationOutcome:
    """Evaluate the export, apply the gate, write the report; optionally post the MR comment."""
    from tfship.evaluate import run_evaluate
    from tfship.report import run_report

    evaluation = run_evaluate(cfg, run_dir, champion=champion, model=model, splits=splits)
    gate = run_gate(cfg, run_dir, override_reason=override_reason, environ=environ)
    report = run_report(run_dir)
    comment = None
    if post:
        from tfship.mr_comment import post_report

        comment = post_report(report.report_md, environ=environ)
    return EvaluationOutcome(evaluation, gate, report, comment)
