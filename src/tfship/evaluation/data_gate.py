"""`gate.data`: the data stage's drift record (data.drift.json) as gate checks, and the "Data"
section of report.md (`data_section`, from gate.json's `data`).

Every measured drift check is judged again against the *current* `gate.data.bounds`, so the
bounds that decide are the committed ones, whatever the data stage ran with. `drift: report`
adds no check (drift is listed in gate.json's `data` and the report); `drift: fail` adds one
failing check per check beyond its bound, or one passing check when there is none. Fails safe:
with `drift: fail` and no data.drift.json (the data stage did not run or its file was not
passed on), or when the champion's statistics could not be read, a failing check says so. No
champion statistics passes and says why locally and in merge-request pipelines; in a trusted CI
pipeline it fails unless `gate.first_run` is committed (as `gate.change` without a champion).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tfship import mdescape as md
from tfship.config import GateConfig
from tfship.evaluation.checks import Check
from tfship.fsutil import read_json

DRIFT_FILE = "data.drift.json"  # tfship.data.statistics.DRIFT_FILE (no TF import here)


def _finding(f: dict[str, Any]) -> dict[str, Any]:
    out = {k: f.get(k) for k in ("feature", "check", "value", "bound", "message")}
    # gate.json is strict JSON: an infinite std ratio (the reference had no spread) is null.
    if isinstance(out["value"], float) and not math.isfinite(out["value"]):
        out["value"] = None
    return out


def data_checks(
    gate: GateConfig, root: Path, *, reference_required: bool = False
) -> tuple[list[Check], dict[str, Any] | None]:
    """(checks for the verdict, gate.json's `data` summary or None without data.drift.json).

    `reference_required` (a trusted CI pipeline, as for `gate.change`): with `drift: fail`, no
    champion statistics fails unless `gate.first_run` is committed — a job never given the
    repository, or a variable pointing it at an empty one, must not turn the check off."""
    path = Path(root) / DRIFT_FILE
    mode = gate.data.drift
    doc = read_json(path) if path.is_file() else None
    if doc is None:
        if mode != "fail":
            return [], None
        why = (
            f"{DRIFT_FILE} is missing: data drift was not measured; run `tfship data` in this "
            "run directory (or pass its outputs on to this job)"
        )
        return [_check("drift", None, math.nan, math.nan, False, why)], {
            "mode": mode,
            "measured": False,
            "note": why,
        }
    bounds = gate.data.bounds.model_dump()
    drifted = []
    for f in doc.get("measured", []):
        bound = bounds.get(f.get("check"))
        value = f.get("value")
        if bound is not None and value is not None and float(value) > bound:
            drifted.append({**_finding(f), "bound": bound})
    # The drift file keeps its bounds; the committed ones decide (see the module docstring).
    violations = [_finding(f) for f in doc.get("violations", [])]
    ref = doc.get("reference") or {}
    summary = {
        "mode": mode,
        "measured": True,
        "has_reference": bool(ref.get("available")),
        "reference_error": bool(ref.get("error")),
        "note": ref.get("note", ""),
        "scope": doc.get("scope"),
        "violations": violations,
        "drifted": drifted,
        "drifted_features": sorted({d["feature"] for d in drifted}),
    }
    if mode != "fail":
        return [], summary
    checks = [
        _check(v["check"], v["feature"], 1.0, math.nan, False, f"schema violation: {v['message']}")
        for v in violations
    ]
    checks += [
        _check(
            d["check"],
            d["feature"],
            math.nan if d["value"] is None else float(d["value"]),
            d["bound"],
            False,
            d["message"],
        )
        for d in drifted
    ]
    if summary["reference_error"]:
        checks.append(_check("drift", None, math.nan, math.nan, False, summary["note"]))
    if not summary["has_reference"] and reference_required and not gate.first_run:
        why = (
            f"no champion statistics to compare with ({summary['note']}); in CI that fails "
            "unless this is the first deploy: commit gate.first_run: true for it, or give the "
            "data job the model repository"
        )
        checks.append(_check("drift", None, math.nan, math.nan, False, why))
    if not checks:
        why = (
            "no drift beyond gate.data.bounds"
            if summary["has_reference"]
            else f"nothing to compare with: {summary['note']}"
        )
        checks.append(_check("drift", None, 0.0, 0.0, True, why))
    return checks, summary


def _check(
    metric: str, feature: str | None, value: float, bound: float, ok: bool, why: str
) -> Check:
    threshold = "within gate.data.bounds" if math.isnan(bound) else f"<= {bound:.4g}"
    return Check("data", metric, value, None, threshold, bound, None, ok, why, feature=feature)


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def data_section(data: dict[str, Any] | None) -> list[str]:
    """The "Data" section: drift of the training data against the champion's (gate.json `data`)."""
    if not data:
        return []
    lines = ["", "### Data", ""]
    if not data.get("measured"):
        lines.append(f"**Data drift not measured.** {md.text(data.get('note', ''), 300)}")
        return lines
    mode = md.code(data.get("mode", "report"), 10)
    sample = " (statistics of a bounded sample)" if data.get("scope") == "sample" else ""
    if data.get("reference_error"):
        lines.append(
            f"**The champion's statistics could not be read**: drift not measured "
            f"({md.text(data.get('note', ''), 300)})"
        )
        return lines
    if not data.get("has_reference"):
        lines.append(
            f"No champion statistics: nothing to compare with{sample}. "
            f"({md.text(data.get('note', ''), 300)})"
        )
        return lines
    for v in data.get("violations", []):
        lines.append(f"- **schema violation**: {md.text(v['message'], 300)}")
    drifted = data.get("drifted", [])
    if not drifted and not data.get("violations"):
        lines.append(f"No drift beyond gate.data.bounds against the champion{sample}.")
        return lines
    if drifted:
        features = ", ".join(md.text(f, 60) for f in data.get("drifted_features", []))
        lines.append(f"Drift beyond gate.data.bounds{sample} (gate.data.drift {mode}): {features}")
        lines += ["", "| feature | check | value | bound |", "|---|---|---|---|"]
        for d in drifted:
            lines.append(
                f"| {md.text(d['feature'], 60)} | {md.text(d['check'], 30)} "
                f"| {_num(d['value'])} | {_num(d['bound'])} |"
            )
    return lines
