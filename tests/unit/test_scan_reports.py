"""GitLab container-scanning report, SARIF 2.1.0 and the markdown summary, from recorded reports.

Both reports are validated against the vendored schemas: GitLab's security report schema 15.2.4
(container-scanning-report-format.json) and OASIS SARIF 2.1.0 (errata01).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import jsonschema
import pytest

from tfship.config import load_config
from tfship.rundir import RunDir
from tfship.scan import TargetKind, record_scan, sarif
from tfship.scan import gitlab as gl
from tfship.scan.findings import parse_report

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trivy"
TODAY = date(2026, 6, 1)


def _validate(instance: dict, schema: dict) -> list[str]:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


@pytest.fixture()
def image_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    Path(".trivyignore.yaml").write_text(
        """
vulnerabilities:
  - id: CVE-2024-7254
    statement: protobuf only parses our own trusted messages
    expired_at: 2026-12-31
  - id: CVE-2023-4911
    statement: was waiting for the base image rebuild
    expired_at: 2026-05-01
"""
    )
    cfg = load_config(None, env={}, overrides=["scan.report=LOW"])
    report = parse_report(json.loads((FIXTURES / "image-tf-serving.json").read_text()))
    run_dir = RunDir(tmp_path / "run")
    result = record_scan(
        cfg,
        run_dir,
        report,
        name="image",
        kind=TargetKind.IMAGE,
        target="registry.example.com/ml/tfship-train:3f2a9c1",
        started=datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
        seconds=42.0,
        today=TODAY,
    )
    return result, run_dir


def test_gitlab_report_validates_against_the_vendored_15_2_4_schema(image_scan) -> None:
    result, _ = image_scan
    report = json.loads(Path(result.artifacts["gitlab"]).read_text())
    schema = gl.schema()
    assert schema["self"]["version"] == gl.SCHEMA_VERSION == report["version"] == "15.2.4"
    assert _validate(report, schema) == []
    vulns = report["vulnerabilities"]
    assert {v["identifiers"][0]["value"] for v in vulns} == {
        "CVE-2024-5535",
        "CVE-2023-45853",
        "CVE-2024-3660",
        "GHSA-9h9q-qhxg-89xr",
        "CVE-2023-4911",
        "CVE-2022-3715",
    }  # fmt: skip  (vulnerabilities only; CVE-2024-7254 is suppressed; the secret is not a package)
    ssl = next(v for v in vulns if v["identifiers"][0]["value"] == "CVE-2024-5535")
    assert ssl["severity"] == "Critical"
    assert ssl["location"]["operating_system"] == "ubuntu 22.04"
    assert ssl["location"]["dependency"] == {
        "package": {"name": "libssl3"},
        "version": "3.0.2-0ubuntu1.15",
    }
    assert ssl["solution"] == "Upgrade libssl3 to 3.0.2-0ubuntu1.17"
    assert any("expired on 2026-05-01" in m["value"] for m in report["scan"]["messages"])


def test_gitlab_schema_check_is_real_a_broken_report_fails_it(image_scan) -> None:
    result, _ = image_scan
    report = json.loads(Path(result.artifacts["gitlab"]).read_text())
    report["vulnerabilities"][0]["severity"] = "Severe"
    del report["scan"]["scanner"]
    errors = _validate(report, gl.schema())
    assert any("'Severe' is not one of" in e for e in errors)
    assert any("'scanner' is a required property" in e for e in errors)


def test_sarif_validates_against_sarif_2_1_0_and_carries_suppressions(image_scan) -> None:
    result, _ = image_scan
    log = json.loads(Path(result.artifacts["sarif"]).read_text())
    schema = sarif.schema()
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    assert _validate(log, schema) == []
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert all(r["properties"]["security-severity"] for r in rules)
    by_rule = {r["ruleId"]: r for r in run["results"]}
    assert by_rule["CVE-2024-5535"]["level"] == "error"
    assert by_rule["CVE-2024-7254"]["suppressions"] == [
        {
            "kind": "external",
            "status": "accepted",
            "justification": "protobuf only parses our own trusted messages",
        }
    ]
    assert run["automationDetails"]["id"] == "tfship-scan/image/"
    for r in run["results"]:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]


def test_sarif_schema_check_is_real_a_broken_log_fails_it(image_scan) -> None:
    result, _ = image_scan
    log = json.loads(Path(result.artifacts["sarif"]).read_text())
    log["runs"][0]["results"][0]["level"] = "fatal"
    assert any("'fatal' is not one of" in e for e in _validate(log, sarif.schema()))


def test_summary_counts_lists_top_findings_and_suppressed_with_reasons(image_scan) -> None:
    result, run_dir = image_scan
    assert not result.passed and result.exit_code == 10
    text = (run_dir.root / "scan" / "summary.md").read_text()
    assert text.startswith("## Security scan")
    assert "failed: image" in text
    assert "| 4 | 1 | 1 | 1 | 0 |" in text  # CRITICAL HIGH MEDIUM LOW UNKNOWN (one suppressed)
    assert "| CRITICAL | `CVE-2024-5535` | libssl3 3.0.2-0ubuntu1.15 → 3.0.2-0ubuntu1.17 |" in text
    assert "`CVE-2024-7254` (HIGH, protobuf) until 2026-12-31: protobuf only parses" in text
    assert "**Expired allowlist entries**" in text
    assert "`CVE-2023-4911` expired 2026-05-01" in text
    assert (
        "| CRITICAL | `github-pat` | GitHub Personal Access Token | /root/.config/deploy.env:2 |"
        in text
    )


def test_summary_merges_scans_recorded_into_the_same_run_dir(image_scan, tmp_path: Path) -> None:
    _, run_dir = image_scan
    cfg = load_config(None, env={})
    report = parse_report(json.loads((FIXTURES / "config-legacy-ids.json").read_text()))
    record_scan(
        cfg, run_dir, report, name="config", kind=TargetKind.CONFIG, target=str(tmp_path),
        started=datetime.now(UTC), today=TODAY,
    )  # fmt: skip
    text = (run_dir.root / "scan" / "summary.md").read_text()
    assert "### `config`: config scan" in text and "### `image`: image scan" in text
