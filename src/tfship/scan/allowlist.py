"""The allowlist: Trivy's own YAML ignore file (`.trivyignore.yaml`), with stricter rules.

Trivy's format already carries what an accepted risk needs (id, `paths`, `purls`, `statement`,
`expired_at`), so the same file works with plain `trivy --ignorefile .trivyignore.yaml`. tfship
adds two rules: every entry needs a `statement` (the reason) and an `expired_at` (a risk is
accepted until a date, not forever). Entries are applied by tfship, not by Trivy, so a suppressed
finding is still reported with its reason, and an expired entry is reported instead of silently
dropped. Like Trivy, an entry stops applying on its `expired_at` date.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tfship import safe_yaml
from tfship.config import trust
from tfship.config.committed import origin_of
from tfship.errors import ConfigError
from tfship.scan.findings import Finding, FindingKind

SECTIONS: dict[str, FindingKind | None] = {
    "vulnerabilities": FindingKind.VULNERABILITY,
    "misconfigurations": FindingKind.MISCONFIGURATION,
    "secrets": FindingKind.SECRET,
    "licenses": None,  # accepted for compatibility; tfship does not run the license scanner
}


class _EntryModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    statement: str = Field(min_length=3, description="why the risk is accepted")
    expired_at: date
    paths: tuple[str, ...] = ()
    purls: tuple[str, ...] = ()


@dataclass(frozen=True)
class AllowEntry:
    """One accepted risk."""

    kind: FindingKind | None
    id: str
    statement: str
    expired_at: date
    paths: tuple[str, ...] = ()
    purls: tuple[str, ...] = ()

    def expired(self, today: date) -> bool:
        return today >= self.expired_at

    def matches(self, finding: Finding) -> bool:
        if self.kind is not finding.kind or not _same_id(self.id, finding.id, finding.kind):
            return False
        if self.paths and not any(
            fnmatch.fnmatchcase(candidate, pattern)
            for pattern in self.paths
            for candidate in {finding.target, finding.location}
        ):
            return False
        return not self.purls or any(_purl_matches(p, finding.purl) for p in self.purls)


@dataclass(frozen=True)
class Suppressed:
    """A finding an active allowlist entry hides, and why."""

    finding: Finding
    reason: str
    expires: date


@dataclass(frozen=True)
class ExpiredEntry:
    """An entry past its date: it no longer hides anything. `matched` counts what it would hide."""

    id: str
    statement: str
    expired_at: date
    matched: int


@dataclass(frozen=True)
class Applied:
    active: tuple[Finding, ...]
    suppressed: tuple[Suppressed, ...]
    expired: tuple[ExpiredEntry, ...]


@dataclass(frozen=True)
class Allowlist:
    entries: tuple[AllowEntry, ...] = ()
    source: Path | None = None

    def apply(self, findings: Iterable[Finding], today: date) -> Applied:
        active: list[Finding] = []
        suppressed: list[Suppressed] = []
        expired_hits = {id(e): 0 for e in self.entries if e.expired(today)}
        for finding in findings:
            matching = [e for e in self.entries if e.matches(finding)]
            live = next((e for e in matching if not e.expired(today)), None)
            if live is not None:
                suppressed.append(Suppressed(finding, live.statement, live.expired_at))
                continue
            for entry in matching:
                expired_hits[id(entry)] += 1
            active.append(finding)
        expired = tuple(
            ExpiredEntry(e.id, e.statement, e.expired_at, expired_hits[id(e)])
            for e in self.entries
            if id(e) in expired_hits
        )
        return Applied(tuple(active), tuple(suppressed), expired)


def _same_id(entry_id: str, finding_id: str, kind: FindingKind) -> bool:
    if entry_id.casefold() == finding_id.casefold():
        return True
    # Misconfiguration ids changed spelling across Trivy versions: AVD-DS-0002, DS002, DS-0002.
    return kind is FindingKind.MISCONFIGURATION and _check_key(entry_id) == _check_key(finding_id)


def _check_key(check_id: str) -> str:
    text = check_id.upper().removeprefix("AVD-").replace("-", "")
    m = re.fullmatch(r"([A-Z]+)0*(\d+)", text)
    return f"{m.group(1)}{int(m.group(2))}" if m else text


def _purl_parts(purl: str) -> tuple[str, str, str | None]:
    body = purl.split("#", 1)[0].split("?", 1)[0]
    body = body.removeprefix("pkg:")
    name_part, _, version = body.partition("@")
    ptype, _, rest = name_part.partition("/")
    return ptype.lower(), unquote(rest).lower(), unquote(version) or None


def _purl_matches(pattern: str, purl: str | None) -> bool:
    """Type, namespace and name must match; the version only when the pattern gives one."""
    if not purl:
        return False
    p_type, p_name, p_version = _purl_parts(pattern)
    f_type, f_name, f_version = _purl_parts(purl)
    return (p_type, p_name) == (f_type, f_name) and (p_version is None or p_version == f_version)


def _require_committed(path: Path) -> None:
    # The allowlist decides what is not a finding: like a verdict field, in a CI job no person
    # started it must be the committed file, not one an earlier job or step rewrote.
    ctx = trust.context()
    if not ctx.in_ci or ctx.may_set_verdict:
        return
    origin = origin_of(path, path.read_bytes())
    if not origin.committed:
        raise ConfigError(
            f"the scan allowlist {path} is {origin.problem}; in a CI job no person started, "
            "only the committed allowlist may decide what is not a finding",
            hint="commit the allowlist change through a merge request (CODEOWNERS review), "
            "and do not modify it in earlier jobs or steps",
        )


def load_allowlist(path: Path) -> Allowlist:
    """Read `path` (missing -> empty allowlist). Bad entries are a ConfigError naming them."""
    if not path.is_file():
        return Allowlist((), None)
    # tfship's strict loader: no aliases, no duplicate ids-as-keys, bounded size, UTF-8.
    raw: Any = safe_yaml.load_file(path)
    _require_committed(path)
    if raw is None:
        return Allowlist((), path)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected Trivy's ignore-file mapping with sections "
            f"{', '.join(SECTIONS)}; received {type(raw).__name__}"
        )
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}"
        )
    entries: list[AllowEntry] = []
    problems: list[str] = []
    for section, kind in SECTIONS.items():
        items = raw.get(section) or []
        if not isinstance(items, list):
            problems.append(f"  {section}: expected a list of entries")
            continue
        for i, item in enumerate(items):
            label = f"{section}[{i}]" + (f" ({item.get('id')})" if isinstance(item, dict) else "")
            try:
                model = _EntryModel.model_validate(item)
            except ValidationError as exc:
                for err in exc.errors():
                    field = ".".join(str(p) for p in err["loc"]) or "(entry)"
                    msg = "required" if err["type"] == "missing" else err["msg"]
                    problems.append(f"  {label}.{field}: {msg}")
                continue
            entries.append(
                AllowEntry(
                    kind, model.id, model.statement, model.expired_at, model.paths, model.purls
                )
            )
    if problems:
        raise ConfigError(
            f"invalid allowlist {path}:\n" + "\n".join(problems),
            hint="every entry needs `id`, `statement: <why this risk is accepted>` and "
            "`expired_at: YYYY-MM-DD`; optional `paths` (globs) and `purls` narrow it",
        )
    return Allowlist(tuple(entries), path)
