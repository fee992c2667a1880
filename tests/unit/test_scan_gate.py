"""Trivy JSON parsing, the allowlist and the severity gate, on recorded Trivy reports."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from tfship.config import ScanConfig, ScanSeverity, load_config
from tfship.errors import ConfigError, ScannerError
from tfship.scan.allowlist import Allowlist, load_allowlist
from tfship.scan.findings import FindingKind, parse_report
from tfship.scan.gate import evaluate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trivy"
TODAY = date(2026, 6, 1)


def _report(name: str):
    return parse_report(json.loads((FIXTURES / name).read_text()), source=name)


def _allowlist(tmp_path: Path, text: str) -> Allowlist:
    path = tmp_path / ".trivyignore.yaml"
    path.write_text(text)
    return load_allowlist(path)


def test_image_report_is_parsed_into_typed_findings_of_every_kind() -> None:
    report = _report("image-tf-serving.json")
    assert report.trivy_version == "unknown"  # the fixture, like Trivy < 0.50, has no Trivy block
    assert report.os == "ubuntu 22.04"
    assert report.has_packages
    by_id = {f.id: f for f in report.findings}
    assert len(report.findings) == 8
    ssl = by_id["CVE-2024-5535"]
    assert ssl.kind is FindingKind.VULNERABILITY
    assert (ssl.package, ssl.installed_version, ssl.fixed_version) == (
        "libssl3",
        "3.0.2-0ubuntu1.15",
        "3.0.2-0ubuntu1.17",
    )
    assert ssl.severity is ScanSeverity.CRITICAL
    assert ssl.cvss_v3_vector == "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:H"
    assert by_id["CVE-2024-7254"].location.endswith("protobuf-4.25.1.dist-info/METADATA")
    secret = by_id["github-pat"]
    assert secret.kind is FindingKind.SECRET and secret.start_line == 2
    assert "*****" in secret.description  # Trivy's masked match, never the secret
    assert not by_id["CVE-2023-45853"].fixable and not by_id["CVE-2022-3715"].fixable
    assert by_id["CVE-2024-3660"].fixable


def test_passed_misconfiguration_checks_are_not_findings_and_legacy_ids_are_kept() -> None:
    report = _report("config-legacy-ids.json")
    assert [(f.id, f.kind) for f in report.findings] == [("DS002", FindingKind.MISCONFIGURATION)]
    assert report.findings[0].resolution.startswith("Add 'USER")


def test_output_that_is_not_a_trivy_report_is_a_scanner_failure() -> None:
    with pytest.raises(ScannerError, match="not a Trivy JSON report"):
        parse_report({"Results": []})
    with pytest.raises(ScannerError, match="SchemaVersion 1"):
        parse_report({"SchemaVersion": 1})


@pytest.mark.parametrize(
    ("fail_on", "blocking"),
    [("CRITICAL", 4), ("HIGH", 6), ("MEDIUM", 7), ("LOW", 8), ("UNKNOWN", 8)],
)
def test_gate_blocks_findings_at_or_above_the_threshold(fail_on: str, blocking: int) -> None:
    scan = ScanConfig(fail_on=fail_on, report="UNKNOWN")
    ev = evaluate(_report("image-tf-serving.json").findings, Allowlist(), scan, TODAY)
    assert len(ev.blocking) == blocking
    assert ev.passed is (blocking == 0)
    assert ev.counts == {"CRITICAL": 4, "HIGH": 2, "MEDIUM": 1, "LOW": 1, "UNKNOWN": 0}


def test_report_level_limits_what_is_listed_but_not_the_counts() -> None:
    scan = ScanConfig(fail_on="CRITICAL", report="HIGH")
    ev = evaluate(_report("image-tf-serving.json").findings, Allowlist(), scan, TODAY)
    assert {f.severity.value for f in ev.reported} == {"CRITICAL", "HIGH"}
    assert ev.reported[0].severity is ScanSeverity.CRITICAL  # most severe first
    assert sum(ev.counts.values()) == 8


def test_ignore_unfixed_drops_vulnerabilities_without_a_fix_and_counts_them() -> None:
    scan = ScanConfig(fail_on="CRITICAL", report="LOW", ignore_unfixed=True)
    ev = evaluate(_report("image-tf-serving.json").findings, Allowlist(), scan, TODAY)
    ids = {f.id for f in ev.active}
    assert "CVE-2023-45853" not in ids  # will_not_fix
    assert "CVE-2022-3715" not in ids  # affected, no fix
    assert "github-pat" in ids  # secrets are never "unfixed"
    assert ev.unfixed_dropped == 2
    assert len(ev.blocking) == 3


def test_allowlist_entry_suppresses_with_its_reason_until_it_expires(tmp_path: Path) -> None:
    allow = _allowlist(
        tmp_path,
        """
vulnerabilities:
  - id: CVE-2024-5535
    statement: NPN/ALPN callback not used by TF Serving; fix lands with the next base image
    expired_at: 2026-07-01
""",
    )
    scan = ScanConfig(fail_on="CRITICAL")
    findings = _report("image-tf-serving.json").findings
    ev = evaluate(findings, allow, scan, TODAY)
    assert [s.finding.id for s in ev.suppressed] == ["CVE-2024-5535"]
    assert ev.suppressed[0].reason.startswith("NPN/ALPN")
    assert "CVE-2024-5535" not in {f.id for f in ev.blocking}
    assert ev.expired == ()

    later = evaluate(findings, allow, scan, date(2026, 7, 1))  # Trivy: expired on the date
    assert later.suppressed == ()
    assert "CVE-2024-5535" in {f.id for f in later.blocking}
    assert [(e.id, e.matched) for e in later.expired] == [("CVE-2024-5535", 1)]


def test_allowlist_narrowed_by_purl_and_path_only_matches_that_package(tmp_path: Path) -> None:
    allow = _allowlist(
        tmp_path,
        """
vulnerabilities:
  - id: CVE-2024-3660
    purls: ["pkg:pypi/keras"]
    statement: Lambda layers are rejected before load (safe_mode); tracked in issue 42
    expired_at: 2027-01-01
  - id: CVE-2023-4911
    purls: ["pkg:deb/ubuntu/libc6@9.99"]
    statement: a different version, so it must not match
    expired_at: 2027-01-01
  - id: CVE-2024-7254
    paths: ["usr/local/lib/python3.11/dist-packages/protobuf-*"]
    statement: only parses our own trusted protos
    expired_at: 2027-01-01
""",
    )
    ev = evaluate(_report("image-tf-serving.json").findings, allow, ScanConfig(), TODAY)
    assert {s.finding.id for s in ev.suppressed} == {"CVE-2024-3660", "CVE-2024-7254"}


def test_misconfiguration_ids_match_across_trivy_spellings(tmp_path: Path) -> None:
    allow = _allowlist(
        tmp_path,
        """
misconfigurations:
  - id: AVD-DS-0002
    statement: the training image needs root for the NVIDIA driver hooks
    expired_at: 2027-01-01
""",
    )
    ev = evaluate(_report("config-legacy-ids.json").findings, allow, ScanConfig(), TODAY)
    assert [s.finding.id for s in ev.suppressed] == ["DS002"]


def test_allowlist_entry_without_reason_or_expiry_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _allowlist(
            tmp_path,
            """
vulnerabilities:
  - id: CVE-2024-5535
    expired_at: 2026-07-01
  - id: CVE-2023-4911
    statement: accepted
""",
        )
    text = str(err.value)
    assert "vulnerabilities[0] (CVE-2024-5535).statement: required" in text
    assert "vulnerabilities[1] (CVE-2023-4911).expired_at: required" in text
    assert "hint:" in text


def test_allowlist_rejects_unknown_sections_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown section"):
        _allowlist(tmp_path, "vulns:\n  - id: CVE-1\n")
    with pytest.raises(ConfigError, match="reasn"):
        _allowlist(
            tmp_path,
            "secrets:\n  - id: github-pat\n    reasn: x\n    statement: abc\n"
            "    expired_at: 2027-01-01\n",
        )


def test_missing_allowlist_file_is_an_empty_allowlist(tmp_path: Path) -> None:
    assert load_allowlist(tmp_path / "absent.yaml").entries == ()


def test_scan_config_rejects_a_report_level_above_the_gate() -> None:
    with pytest.raises(ConfigError, match=r"scan.report \(CRITICAL\) must not be above"):
        load_config(None, env={}, overrides=["scan.fail_on=HIGH", "scan.report=CRITICAL"])
    cfg = load_config(None, env={"TFSHIP_SCAN_FAIL_ON": "high"})
    assert cfg.scan.fail_on is ScanSeverity.HIGH


@pytest.mark.parametrize(
    ("kind", "severity", "sets", "fails"),
    [
        ("misconfiguration", "HIGH", [], True),  # e.g. DS-0002, the Dockerfile runs as root
        ("misconfiguration", "MEDIUM", [], False),
        ("vulnerability", "HIGH", [], False),
        ("vulnerability", "CRITICAL", [], True),
        ("secret", "HIGH", [], False),
        ("misconfiguration", "HIGH", ["scan.fail_on_config=CRITICAL"], False),
        ("vulnerability", "HIGH", ["scan.fail_on=HIGH"], True),
    ],
)
def test_misconfigurations_have_their_own_stricter_default_threshold(
    kind: str, severity: str, sets: list[str], fails: bool
) -> None:
    scan = load_config(None, env={}, overrides=sets).scan
    assert scan.fails(kind, ScanSeverity(severity)) is fails


def test_the_report_level_must_cover_the_config_threshold_too() -> None:
    with pytest.raises(ConfigError, match=r"scan\.fail_on_config"):
        load_config(None, env={}, overrides=["scan.report=CRITICAL", "scan.fail_on_config=HIGH"])
