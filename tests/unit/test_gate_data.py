"""`gate.data`: the data stage's drift record as gate checks, in gate.json and the MR report.

No TensorFlow: metrics.json and data.drift.json are written as the evaluate and data stages
write them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tfship.config import load_config
from tfship.data.statistics import DRIFT_FILE
from tfship.errors import ConfigError
from tfship.fsutil import atomic_write_json
from tfship.gate import run_gate
from tfship.report import run_report
from tfship.rundir import RunDir

HOSTILE = "<img src=x onerror=alert(1)> @all | [a](javascript:1)"


def metrics_doc() -> dict[str, Any]:
    return {
        "schema": "tfship-metrics/1",
        "test_examples": 10,
        "data_fingerprint": "cd" * 32,
        "candidate": {
            "path": "/runs/x/export/3",
            "version": 3,
            "metrics": {"accuracy": 0.9},
            "latency_ms": {"1": {"p50": 1.0, "p95": 2.0}},
            "plots": [],
        },
        "champion": None,
        "champion_note": "first run",
        "machine": {"cpus": 2},
    }


def finding(feature: str, check: str, value: float, bound: float) -> dict[str, Any]:
    return {"feature": feature, "check": check, "value": value, "bound": bound,
            "message": f"{feature!r}: {check} {value}"}  # fmt: skip


MEASURED = [
    finding("x", "mean_shift", 4.1, 0.5),
    finding("x", "std_ratio", 1.1, 2.0),
    finding(HOSTILE, "unseen_rate", 0.6, 0.1),
    finding(HOSTILE, "linf", 0.05, 0.2),
]


def drift_doc(reference: bool = True, measured=MEASURED, violations=()) -> dict[str, Any]:
    drift = [f for f in measured if f["value"] > f["bound"]]
    return {
        "format": "tfship-data-drift/1",
        "reference": {
            "available": reference,
            "note": "champion statistics: x" if reference else "no champion statistics: none",
            "version": 2 if reference else None,
            "scope": "all",
        },
        "scope": "all",
        "mode": "report",
        "violations": list(violations),
        "drift": drift,
        "measured": measured if reference else [],
        "drifted_features": sorted({f["feature"] for f in drift}),
    }


def run_dir_with(tmp_path: Path, drift: dict[str, Any] | None) -> RunDir:
    run_dir = RunDir(tmp_path / "run").ensure()
    atomic_write_json(run_dir.evaluation / "metrics.json", metrics_doc())
    if drift is not None:
        atomic_write_json(run_dir.root / DRIFT_FILE, drift)
    return run_dir


def cfg(*sets: str) -> Any:
    return load_config(env={}, overrides=["gate.absolute={accuracy: {min: 0.5}}", *sets])


GATE_TABLE = [
    # (id, gate.data config, drift doc, verdict, failed entries in gate.json)
    ("fail_with_drift_fails_naming_features", ["gate.data.drift=fail"], drift_doc(), "failed",
     ["data:x:mean_shift", f"data:{HOSTILE}:unseen_rate"]),
    ("report_with_drift_passes", [], drift_doc(), "passed", []),
    ("fail_without_reference_passes_first_run", ["gate.data.drift=fail"],
     drift_doc(reference=False), "passed", []),
    ("fail_without_drift_file_fails_safe", ["gate.data.drift=fail"], None, "failed",
     ["data:drift"]),
    ("report_without_drift_file_passes", [], None, "passed", []),
    ("committed_bounds_decide_not_the_files", ["gate.data.drift=fail",
     "gate.data.bounds={mean_shift: 5, unseen_rate: 0.7}"], drift_doc(), "passed", []),
    ("fail_when_the_champion_statistics_could_not_be_read_fails", ["gate.data.drift=fail"],
     {**drift_doc(reference=False), "reference": {"available": False, "error": True,
      "note": "could not read the champion's statistics: access denied"}}, "failed",
     ["data:drift"]),
    ("fail_with_violation_fails", ["gate.data.drift=fail"],
     drift_doc(violations=[finding("c", "type", 1, 0)]), "failed",
     ["data:c:type", "data:x:mean_shift", f"data:{HOSTILE}:unseen_rate"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sets", "drift", "verdict", "failed"),
    [t[1:] for t in GATE_TABLE],
    ids=[t[0] for t in GATE_TABLE],
)
def test_gate_data_verdicts(
    tmp_path: Path, sets: list[str], drift: Any, verdict: str, failed: list[str]
) -> None:
    run_dir = run_dir_with(tmp_path, drift)
    gate = run_gate(cfg(*sets), run_dir)
    doc = json.loads((run_dir.evaluation / "gate.json").read_text())
    assert gate.verdict == doc["verdict"] == verdict
    assert gate.exit_code == doc["exit_code"] == (7 if verdict == "failed" else 0)
    assert doc["failed"] == failed
    data_checks = [c for c in doc["checks"] if c["kind"] == "data"]
    if "gate.data.drift=fail" in sets:
        assert data_checks and all(c["source"] for c in data_checks)
    else:
        assert data_checks == []


def test_report_mode_lists_drifted_features_in_gate_json_and_the_report(tmp_path: Path) -> None:
    run_dir = run_dir_with(tmp_path, drift_doc())
    assert run_gate(cfg(), run_dir).verdict == "passed"
    data = json.loads((run_dir.evaluation / "gate.json").read_text())["data"]
    assert data["mode"] == "report" and data["drifted_features"] == sorted(["x", HOSTILE])
    md = run_report(run_dir).report_md.read_text()
    assert "### Data" in md and "Drift beyond gate.data.bounds" in md
    assert "| x | mean_shift | 4.1000 | 0.5000 |" in md
    # The feature name is data: escaped, no HTML, no mention, no link.
    assert "<img" not in md and "@all" not in md
    assert not re.search(r"(?<!\\)\]\(javascript", md)
    assert "&lt;img src=x onerror=alert(1)> @&#8203;all \\| \\[a\\](javascript:1)" in md


def test_a_failing_data_check_is_named_in_the_failed_checks(tmp_path: Path) -> None:
    run_dir = run_dir_with(tmp_path, drift_doc())
    run_gate(cfg("gate.data.drift=fail"), run_dir)
    md = run_report(run_dir).report_md.read_text()
    assert "**mean_shift** of x (data)" in md


def test_no_champion_statistics_is_said_in_the_report(tmp_path: Path) -> None:
    run_dir = run_dir_with(tmp_path, drift_doc(reference=False))
    run_gate(cfg(), run_dir)
    md = run_report(run_dir).report_md.read_text()
    assert "No champion statistics: nothing to compare with" in md


def test_gate_data_rejects_unknown_modes_and_bounds() -> None:
    with pytest.raises(ConfigError):
        cfg("gate.data.drift=warn")
    with pytest.raises(ConfigError):
        cfg("gate.data.bounds={mean_shift: -1}")
    with pytest.raises(ConfigError):
        cfg("gate.data.bounds={shift: 1}")


def test_gate_data_is_a_verdict_field() -> None:
    from tfship.config.fields import is_verdict

    assert is_verdict("gate.data.drift") and is_verdict("gate.data.bounds.mean_shift")


PUSH = {"CI": "true", "GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "push", "CI_JOB_ID": "7"}
MR = {**PUSH, "CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "3"}


@pytest.mark.parametrize(
    ("environ", "sets", "verdict"),
    [
        pytest.param(PUSH, [], "failed", id="trusted_ci_without_reference_fails"),
        pytest.param(PUSH, ["gate.first_run=true"], "passed", id="committed_first_run_passes"),
        pytest.param(MR, [], "passed", id="merge_request_reports_only"),
        pytest.param({}, [], "passed", id="local_run_passes"),
    ],
)
def test_drift_fail_without_champion_statistics_fails_safe_in_trusted_ci(
    tmp_path: Path, environ: dict[str, str], sets: list[str], verdict: str
) -> None:
    # A data job never given the repository (or pointed at an empty one by a variable) must
    # not turn gate.data off where models ship.
    run_dir = run_dir_with(tmp_path, drift_doc(reference=False))
    gate = run_gate(cfg("gate.data.drift=fail", *sets), run_dir, environ=environ)
    doc = json.loads((run_dir.evaluation / "gate.json").read_text())
    assert gate.verdict == verdict
    assert doc["failed"] == (["data:drift"] if verdict == "failed" else [])
    if verdict == "failed":
        (check,) = [c for c in doc["checks"] if not c["passed"]]
        assert "gate.first_run" in check["why"]
