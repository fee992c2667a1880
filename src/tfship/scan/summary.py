"""scan/summary.md: the security section of the merge-request report.

Rebuilt from every scan record in the run's scan/ directory (`<name>.result.json`), so scans run
by separate CI jobs into the same run directory end up in one summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tfship import mdescape as md

TOP_FINDINGS = 10
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")


def _cell(text: Any, limit: int = 90) -> str:
    # File paths, titles and reasons come from the scanned project and Trivy's data, and this
    # section becomes part of the merge-request comment: inert Markdown, credentials masked.
    return md.text(text or "", limit)


def _finding_row(f: dict[str, Any]) -> str:
    where = f.get("pkg_path") or f.get("target") or ""
    if f.get("start_line"):
        where = f"{where}:{f['start_line']}"
    if f.get("package"):
        fix = f.get("fixed_version") or "no fix"
        what = f"{f['package']} {f.get('installed_version') or ''} → {fix}"
    else:
        what = f.get("title", "")
    return f"| {f['severity']} | {md.code(f['id'], 40)} | {_cell(what)} | {_cell(where, 60)} |"


def _section(rec: dict[str, Any]) -> list[str]:
    head = f"### {md.code(rec['name'])}: {rec['kind']} scan of {md.code(rec['target'], 80)}"
    if rec.get("error"):
        return [head, "", f"**Scanner failed — not a pass.** {_cell(rec['error'], 400)}", ""]
    verdict = "passed: nothing" if rec["passed"] else f"**failed**: {rec['blocking']} finding(s)"
    lines = [
        head,
        "",
        f"Gate {verdict} at or above {rec['fail_on']} (reporting {rec['report_level']} and up; "
        f"Trivy {rec['trivy_version']}, {rec['seconds']:.1f} s).",
        "",
        "| " + " | ".join(SEVERITIES) + " |",
        "|" + "---:|" * len(SEVERITIES),
        "| " + " | ".join(str(rec["counts"].get(s, 0)) for s in SEVERITIES) + " |",
        "",
    ]
    findings = rec.get("findings") or []
    if findings:
        lines += ["| severity | id | what | where |", "|---|---|---|---|"]
        lines += [_finding_row(f) for f in findings[:TOP_FINDINGS]]
        if len(findings) > TOP_FINDINGS:
            lines.append(f"\n…and {len(findings) - TOP_FINDINGS} more in the SARIF report.")
        lines.append("")
    if rec.get("unfixed_dropped"):
        lines += [f"{rec['unfixed_dropped']} vulnerabilities without a fix were left out "
                  "(scan.ignore_unfixed).", ""]  # fmt: skip
    suppressed = rec.get("suppressed") or []
    if suppressed:
        lines += ["Suppressed by the allowlist:", ""]
        lines += [
            f"- {md.code(s['finding']['id'])} ({s['finding']['severity']}, "
            f"{_cell(s['finding'].get('package') or s['finding']['target'], 50)}) until "
            f"{s['expires']}: {_cell(s['reason'], 200)}"
            for s in suppressed
        ]
        lines.append("")
    expired = rec.get("expired_allowlist") or []
    if expired:
        lines += ["**Expired allowlist entries** (no longer suppress anything; renew or fix):", ""]
        lines += [
            f"- {md.code(e['id'])} expired {e['expired_at']} ({_cell(e['statement'], 120)}); "
            f"now reported: {e['matched']} finding(s)"
            for e in expired
        ]
        lines.append("")
    return lines


def render_summary(records: list[dict[str, Any]]) -> str:
    if not records:
        return "## Security scan\n\nNo scan was run.\n"
    failed = [r["name"] for r in records if r.get("error") or not r.get("passed")]
    status = "all scans passed" if not failed else f"failed: {_cell(', '.join(failed), 200)}"
    lines = ["## Security scan", "", f"Trivy scans of this run: {status}.", ""]
    for rec in records:
        lines += _section(rec)
    return "\n".join(lines).rstrip() + "\n"


def load_records(scan_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(p.read_text(encoding="utf-8")) for p in sorted(scan_dir.glob("*.result.json"))
    ]
