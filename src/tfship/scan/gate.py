"""The severity gate: allowlist, unfixed filter, threshold. Pure functions over findings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from tfship.config import ScanConfig, ScanSeverity
from tfship.scan.allowlist import Allowlist, ExpiredEntry, Suppressed
from tfship.scan.findings import Finding


@dataclass(frozen=True)
class Evaluation:
    """What the gate saw and decided.

    `active`: findings after the allowlist and the unfixed filter, most severe first;
    `blocking`: the active ones at or above `fail_on`; `reported`: active ones at or above
    `report`; `unfixed_dropped`: vulnerabilities without a fix left out (scan.ignore_unfixed).
    """

    fail_on: ScanSeverity
    report_level: ScanSeverity
    active: tuple[Finding, ...]
    blocking: tuple[Finding, ...]
    reported: tuple[Finding, ...]
    suppressed: tuple[Suppressed, ...]
    expired: tuple[ExpiredEntry, ...]
    unfixed_dropped: int

    @property
    def passed(self) -> bool:
        return not self.blocking

    @property
    def counts(self) -> dict[str, int]:
        """Active findings by severity, every severity present (zeros included)."""
        out = {s.value: 0 for s in reversed(ScanSeverity)}
        for f in self.active:
            out[f.severity.value] += 1
        return out


def most_severe_first(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=lambda f: (-f.severity.rank, f.kind.value, f.id, f.target)))


def evaluate(
    findings: Iterable[Finding], allowlist: Allowlist, scan: ScanConfig, today: date
) -> Evaluation:
    applied = allowlist.apply(findings, today)
    active = applied.active
    dropped = 0
    if scan.ignore_unfixed:
        kept = tuple(f for f in active if f.fixable)
        dropped = len(active) - len(kept)
        active = kept
    active = most_severe_first(active)
    return Evaluation(
        fail_on=scan.fail_on,
        report_level=scan.report,
        active=active,
        blocking=tuple(f for f in active if scan.fails(f.kind.value, f.severity)),
        reported=tuple(f for f in active if f.severity.rank >= scan.report.rank),
        suppressed=applied.suppressed,
        expired=applied.expired,
        unfixed_dropped=dropped,
    )
