"""Typed findings parsed from Trivy's JSON report (`--format json`, SchemaVersion 2).

Trivy's report is `Results[]`, one per target (an OS package DB, a lock file, a Dockerfile, a
file with a secret), each carrying `Vulnerabilities`, `Misconfigurations` and/or `Secrets`.
Misconfiguration checks that passed (`Status: PASS`, only with --include-non-failures) are not
findings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tfship.config import ScanSeverity
from tfship.errors import ScannerError


class FindingKind(StrEnum):
    VULNERABILITY = "vulnerability"
    MISCONFIGURATION = "misconfiguration"
    SECRET = "secret"


@dataclass(frozen=True)
class Finding:
    """One thing Trivy found. `package`/versions are set for vulnerabilities only."""

    kind: FindingKind
    id: str
    severity: ScanSeverity
    title: str
    target: str
    description: str = ""
    package: str | None = None
    installed_version: str | None = None
    fixed_version: str | None = None
    status: str | None = None
    purl: str | None = None
    pkg_path: str | None = None
    primary_url: str | None = None
    start_line: int | None = None
    end_line: int | None = None
    resolution: str | None = None
    cvss_v3_vector: str | None = None

    @property
    def fixable(self) -> bool:
        """A fix exists. Trivy's `Status` is authoritative when present (`fixed`)."""
        if self.kind is not FindingKind.VULNERABILITY:
            return True
        if self.status:
            return self.status == "fixed"
        return bool(self.fixed_version)

    @property
    def location(self) -> str:
        """The file (or package path inside an image) to point a reader at."""
        return self.pkg_path or self.target

    @property
    def label(self) -> str:
        if self.package:
            return f"{self.id} in {self.package} {self.installed_version or ''}".rstrip()
        return f"{self.id} {self.title}".rstrip()


@dataclass(frozen=True)
class TrivyReport:
    """What tfship keeps of one Trivy JSON report."""

    artifact_name: str
    artifact_type: str
    trivy_version: str
    os: str | None
    findings: tuple[Finding, ...]
    has_packages: bool


def _severity(raw: Any) -> ScanSeverity:
    try:
        return ScanSeverity(str(raw or "UNKNOWN").upper())
    except ValueError:
        return ScanSeverity.UNKNOWN


def _nvd_v3(vuln: Mapping[str, Any]) -> str | None:
    cvss = vuln.get("CVSS") or {}
    for source in ("nvd", "ghsa", "redhat"):
        vector = (cvss.get(source) or {}).get("V3Vector")
        if vector:
            return str(vector)
    return None


def _vulnerability(target: str, v: Mapping[str, Any]) -> Finding:
    ident = v.get("PkgIdentifier") or {}
    return Finding(
        kind=FindingKind.VULNERABILITY,
        id=str(v["VulnerabilityID"]),
        severity=_severity(v.get("Severity")),
        title=str(v.get("Title") or v["VulnerabilityID"]),
        target=target,
        description=str(v.get("Description") or ""),
        package=v.get("PkgName"),
        installed_version=v.get("InstalledVersion"),
        fixed_version=v.get("FixedVersion") or None,
        status=v.get("Status"),
        purl=ident.get("PURL"),
        pkg_path=v.get("PkgPath"),
        primary_url=v.get("PrimaryURL"),
        cvss_v3_vector=_nvd_v3(v),
    )


def _misconfiguration(target: str, m: Mapping[str, Any]) -> Finding:
    cause = m.get("CauseMetadata") or {}
    # Trivy >= 0.6x reports "DS-0002"; older versions "DS002" with AVDID "AVD-DS-0002".
    return Finding(
        kind=FindingKind.MISCONFIGURATION,
        id=str(m.get("ID") or m.get("AVDID")),
        severity=_severity(m.get("Severity")),
        title=str(m.get("Title") or m.get("ID")),
        target=target,
        description=str(m.get("Message") or m.get("Description") or ""),
        primary_url=m.get("PrimaryURL"),
        start_line=cause.get("StartLine") or None,
        end_line=cause.get("EndLine") or None,
        resolution=m.get("Resolution"),
    )


def _secret(target: str, s: Mapping[str, Any]) -> Finding:
    # `Match` is Trivy's already-masked line; the secret itself never reaches our reports.
    return Finding(
        kind=FindingKind.SECRET,
        id=str(s["RuleID"]),
        severity=_severity(s.get("Severity")),
        title=str(s.get("Title") or s["RuleID"]),
        target=target,
        description=str(s.get("Match") or ""),
        start_line=s.get("StartLine") or None,
        end_line=s.get("EndLine") or None,
    )


def parse_report(data: Any, *, source: str = "trivy output") -> TrivyReport:
    """Trivy JSON (already decoded) -> TrivyReport. Anything else is a scanner failure."""
    if not isinstance(data, dict) or "SchemaVersion" not in data:
        raise ScannerError(
            f"{source} is not a Trivy JSON report (no SchemaVersion)",
            hint="tfship runs trivy with --format json; check TFSHIP_TRIVY points at trivy",
        )
    if data["SchemaVersion"] != 2:
        raise ScannerError(
            f"{source}: Trivy report SchemaVersion {data['SchemaVersion']}; tfship reads 2",
            hint="use Trivy 0.20 or later (tested with 0.76)",
        )
    findings: list[Finding] = []
    has_packages = False
    try:
        for result in data.get("Results") or []:
            target = str(result.get("Target", ""))
            has_packages = has_packages or bool(result.get("Packages"))
            findings.extend(_vulnerability(target, v) for v in result.get("Vulnerabilities") or [])
            findings.extend(
                _misconfiguration(target, m)
                for m in result.get("Misconfigurations") or []
                if m.get("Status", "FAIL") == "FAIL"
            )
            findings.extend(_secret(target, s) for s in result.get("Secrets") or [])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ScannerError(
            f"{source}: unexpected Trivy report structure ({type(exc).__name__}: {exc})",
            hint="tfship is tested with Trivy 0.76; report this with the trivy version",
        ) from exc
    meta = data.get("Metadata") or {}
    os_info = meta.get("OS") or {}
    os_name = " ".join(p for p in (os_info.get("Family"), os_info.get("Name")) if p) or None
    return TrivyReport(
        artifact_name=str(data.get("ArtifactName", "")),
        artifact_type=str(data.get("ArtifactType", "")),
        trivy_version=str((data.get("Trivy") or {}).get("Version", "unknown")),
        os=os_name,
        findings=tuple(findings),
        has_packages=has_packages,
    )
