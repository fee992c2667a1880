"""SARIF 2.1.0 for GitHub code scanning (`github/codeql-action/upload-sarif`).

One run per scan; `automationDetails.id` gives each scan its own category, so uploading the
config, secret and image scans of one commit does not make GitHub close each other's alerts.
Allowlisted findings are included with an `accepted` suppression carrying the reason.
`security-severity` is the property GitHub uses to rank security alerts.
"""

from __future__ import annotations

import json
from importlib import resources
from posixpath import join as posix_join
from typing import Any
from urllib.parse import quote

from tfship.config import ScanSeverity
from tfship.scan.findings import Finding, FindingKind
from tfship.scan.gate import Evaluation

SCHEMA_FILE = "sarif-schema-2.1.0.json"
SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)

_LEVEL = {
    ScanSeverity.CRITICAL: "error",
    ScanSeverity.HIGH: "error",
    ScanSeverity.MEDIUM: "warning",
    ScanSeverity.LOW: "note",
    ScanSeverity.UNKNOWN: "note",
}
# GitHub maps security-severity to critical (>= 9.0), high (7.0-8.9), medium (4.0-6.9), low.
_SECURITY_SEVERITY = {
    ScanSeverity.CRITICAL: "9.5",
    ScanSeverity.HIGH: "8.0",
    ScanSeverity.MEDIUM: "5.5",
    ScanSeverity.LOW: "2.0",
    ScanSeverity.UNKNOWN: "0.0",
}


def schema() -> dict[str, Any]:
    text = resources.files("tfship").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def _uri(base: str, path: str) -> str:
    full = posix_join(base, path) if base not in ("", ".") else path
    return quote(full.lstrip("/"), safe="/:@._-~+")


def _rule(f: Finding) -> dict[str, Any]:
    text = f.description or f.title
    if f.resolution:
        text = f"{text}\n\nResolution: {f.resolution}"
    rule: dict[str, Any] = {
        "id": f.id,
        "name": f.kind.value,
        "shortDescription": {"text": f.title},
        "fullDescription": {"text": text},
        "help": {"text": text},
        "defaultConfiguration": {"level": _LEVEL[f.severity]},
        "properties": {
            "security-severity": _SECURITY_SEVERITY[f.severity],
            "tags": ["security", f.kind.value, f.severity.value],
            "precision": "very-high",
        },
    }
    if f.primary_url:
        rule["helpUri"] = f.primary_url
    return rule


def _message(f: Finding) -> str:
    if f.kind is FindingKind.VULNERABILITY:
        fix = f"fixed in {f.fixed_version}" if f.fixed_version else "no fix yet"
        return f"{f.id} ({f.severity.value}) in {f.package} {f.installed_version}: {f.title}; {fix}"
    return f"{f.id} ({f.severity.value}): {f.title}. {f.description}".strip()


def _result(f: Finding, rule_index: int, base: str, reason: str | None) -> dict[str, Any]:
    region = {"startLine": f.start_line or 1, "endLine": f.end_line or f.start_line or 1}
    result: dict[str, Any] = {
        "ruleId": f.id,
        "ruleIndex": rule_index,
        "level": _LEVEL[f.severity],
        "message": {"text": _message(f)},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": _uri(base, f.location)},
                    "region": region,
                }
            }
        ],
    }
    if reason is not None:
        result["suppressions"] = [
            {"kind": "external", "status": "accepted", "justification": reason}
        ]
    return result


def build_sarif(
    evaluation: Evaluation, *, category: str, trivy_version: str, base: str = ""
) -> dict[str, Any]:
    """`base`: the scanned directory relative to the repository root, prefixed to locations."""
    rows: list[tuple[Finding, str | None]] = [(f, None) for f in evaluation.reported]
    rows += [(s.finding, s.reason) for s in evaluation.suppressed]
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for f, _ in sorted(rows, key=lambda r: -r[0].severity.rank):  # a rule takes its worst case
        if f.id not in index:
            index[f.id] = len(rules)
            rules.append(_rule(f))
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "Trivy",
                        "version": trivy_version,
                        "informationUri": "https://github.com/aquasecurity/trivy",
                        "rules": rules,
                    }
                },
                "automationDetails": {"id": f"tfship-scan/{category}/"},
                "results": [_result(f, index[f.id], base, reason) for f, reason in rows],
            }
        ],
    }
