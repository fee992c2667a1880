"""The deploy log's records: who did what, when, from which pipeline.

Records are appended by the repository (`ModelRepository.append_log`) next to the versions, so
they live as long as the models they describe.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Any

from tfship import env as envvars


def who(environ: dict[str, str] | None = None) -> str:
    ctx = envvars.ci_context(environ)
    for key in ("GITLAB_USER_LOGIN", "GITHUB_ACTOR"):
        if ctx.get(key):
            return ctx[key]
    try:
        return f"{getpass.getuser()} (local)"
    except Exception:  # no passwd entry in some containers
        return "unknown (local)"


def log_record(action: str, model: str, **fields: Any) -> dict[str, Any]:
    """A deploy-log record with who/when/where; callers add why, from/to versions, status."""
    ctx = envvars.ci_context()
    return {
        "action": action,
        "model": model,
        "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "who": who(),
        "pipeline_url": ctx.get("CI_PIPELINE_URL")
        or (
            f"{ctx['GITHUB_SERVER_URL']}/{ctx['GITHUB_REPOSITORY']}/actions/runs/{ctx['GITHUB_RUN_ID']}"
            if {"GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"} <= ctx.keys()
            else None
        ),
        "job_url": ctx.get("CI_JOB_URL"),
        "commit": ctx.get("CI_COMMIT_SHA") or ctx.get("GITHUB_SHA"),
        **fields,
    }
