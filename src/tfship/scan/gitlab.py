"""GitLab container-scanning report (`artifacts:reports:container_scanning`).

Targets GitLab's security report schema 15.2.4 (vendored in tfship/schemas/). Only
vulnerabilities fit this format (its location is a package in an image); secrets and
misconfigurations go to the SARIF report and the markdown summary. Suppressed findings are left
out: GitLab has no "accepted risk with reason" field, the summary lists them.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from importlib import resources
from typing import Any

from tfship import __version__
from tfship.scan.findings import Finding, FindingKind
from tfship.scan.gate import Evaluation

SCHEMA_VERSION = "15.2.4"
SCHEMA_FILE = f"gitlab-container-scanning-report-format-{SCHEMA_VERSION}.json"
SCHEMA_URL = (
    "https://gitlab.com/gitlab-org/security-products/security-report-schemas/-/raw/"
    f"v{SCHEMA_VERSION}/dist/container-scanning-report-format.json"
)
REPORT_NAME = "gl-container-scanning-report.json"
_URL = re.compile(r"^(https?|ftp)://.+")
_NAMESPACE = uuid.UUID("6f1c5a52-4d3e-4b8e-9a55-0f1f2b7c9e10")  # tfship's, for stable ids


def schema() -> dict[str, Any]:
    import json

    text = resources.files("tfship").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def _gl_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _identifier(f: Finding) -> dict[str, Any]:
    prefix = f.id.split("-", 1)[0].lower()
    ident: dict[str, Any] = {
        "type": prefix if prefix in ("cve", "ghsa", "cwe") else "trivy",
        "name": f.id,
        "value": f.id,
    }
    if f.primary_url and _URL.match(f.primary_url):
        ident["url"] = f.primary_url
    return ident


def _vulnerability(f: Finding, image: str, os_name: str) -> dict[str, Any]:
    package = f.package or "unknown"
    version = f.installed_version or "unknown"
    solution = (
        f"Upgrade {package} to {f.fixed_version}" if f.fixed_version else "No fixed version yet"
    )
    vuln: dict[str, Any] = {
        "id": str(uuid.uuid5(_NAMESPACE, f"{image}|{f.id}|{package}|{version}|{f.location}")),
        "name": f.title[:255],
        "description": f.description[:1_048_576] or f.title,
        "severity": f.severity.value.capitalize(),
        "solution": solution[:7000],
        "identifiers": [_identifier(f)],
        "location": {
            "dependency": {"package": {"name": package}, "version": version},
            "operating_system": os_name,
            "image": image,
        },
    }
    if f.primary_url and _URL.match(f.primary_url):
        vuln["links"] = [{"url": f.primary_url}]
    return vuln


def build_report(
    evaluation: Evaluation,
    *,
    image: str,
    os_name: str | None,
    trivy_version: str,
    started: datetime,
    finished: datetime,
) -> dict[str, Any]:
    """The report as a dict, valid against the vendored 15.2.4 schema."""
    messages = [
        {
            "level": "warn",
            "value": f"allowlist entry {e.id} expired on {e.expired_at} ({e.statement}); "
            f"it no longer suppresses {e.matched} finding(s)",
        }
        for e in evaluation.expired
    ]
    messages += [
        {"level": "info", "value": f"{s.finding.id} suppressed until {s.expires}: {s.reason}"}
        for s in evaluation.suppressed
    ]
    return {
        "version": SCHEMA_VERSION,
        "schema": SCHEMA_URL,
        "scan": {
            "analyzer": {
                "id": "tfship-scan",
                "name": "tfship scan",
                "version": __version__,
                "vendor": {"name": "tfship"},
            },
            "scanner": {
                "id": "trivy",
                "name": "Trivy",
                "version": trivy_version,
                "url": "https://github.com/aquasecurity/trivy",
                "vendor": {"name": "Aqua Security"},
            },
            "type": "container_scanning",
            "start_time": _gl_time(started),
            "end_time": _gl_time(finished),
            "status": "success",
            "messages": messages,
        },
        "vulnerabilities": [
            _vulnerability(f, image, os_name or "unknown")
            for f in evaluation.reported
            if f.kind is FindingKind.VULNERABILITY
        ],
    }
