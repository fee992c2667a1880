"""The deploy log's records: who did what, when, from which pipeline.

Records are appended by the repository (`ModelRepository.append_log`) next to the versions, so
they live as long as the models they describe. Reading never depends on a perfect log: a torn
line (a writer killed mid-append), a hand edit or a record that fails its schema
(`schemas/serving-log-record.schema.json`) is skipped and reported, never fatal.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

from tfship import env as envvars
from tfship.config.trust import LOGIN_VARIABLES
from tfship.serving import schema


def who(environ: dict[str, str] | None = None) -> str:
    ctx = envvars.ci_context(environ)
    for key in LOGIN_VARIABLES:
        if ctx.get(key):
            return ctx[key]
    try:
        return f"{getpass.getuser()} (local)"
    except Exception:  # no passwd entry in some containers
        return "unknown (local)"


def pipeline_url() -> str | None:
    ctx = envvars.ci_context()
    if ctx.get("CI_PIPELINE_URL"):
        return ctx["CI_PIPELINE_URL"]
    if {"GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"} <= ctx.keys():
        return (
            f"{ctx['GITHUB_SERVER_URL']}/{ctx['GITHUB_REPOSITORY']}/actions/runs/"
            f"{ctx['GITHUB_RUN_ID']}"
        )
    return None


def log_record(action: str, model: str, **fields: Any) -> dict[str, Any]:
    """A deploy-log record with who/when/where; callers add why, from/to versions, status."""
    ctx = envvars.ci_context()
    return {
        "action": action,
        "model": model,
        "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "who": who(),
        "pipeline_url": pipeline_url(),
        "job_url": ctx.get("CI_JOB_URL"),
        "commit": ctx.get("CI_COMMIT_SHA") or ctx.get("GITHUB_SHA"),
        **fields,
    }


def parse(raw: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(valid records, problems) from (where, text) pairs; blank texts are ignored."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for where, text in raw:
        if not text.strip():
            continue
        doc, bad = schema.loads("log-record", text)
        if doc is None:
            problems.append(f"{where}: {'; '.join(bad)} ({text[:80]!r})")
        else:
            records.append(doc)
    return records, problems
