"""What an export is named and stamped with: its version number and its git provenance.

TF Serving loads `<model>/<version>/` for any directory name it can parse as an int64, and the
newest is the highest number; tfship's versions are integers in [1, 2**63 - 1].
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from tfship import env
from tfship.artifacts import numeric_versions
from tfship.errors import ConfigError, ModelError

# TF Serving parses version directory names as int64; tfship's versions start at 1.
MAX_VERSION = 2**63 - 1


def check_version(version: Any) -> int:
    """An explicit version, if TF Serving can load it; ConfigError (exit 3) otherwise."""
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise ConfigError(
            f"export version must be an integer in [1, 2**63 - 1] (TF Serving reads it as an "
            f"int64). Received: {str(version)[:40]}",
            hint="set export.version to a positive integer, or unset it to take the next one",
        )
    return version


def next_version(export_root: Path, scheme: str) -> int:
    """The version a new export gets. Never below one more than what the run already holds."""
    following = max(numeric_versions(export_root), default=0) + 1
    if scheme == "timestamp":
        # Every CI run starts from an empty run directory; a sequential number would be "1"
        # each time and collide with the version published by the previous pipeline.
        following = max(int(time.time()), following)
    if following > MAX_VERSION:
        raise ModelError(
            f"{export_root} already holds version {following - 1}, the largest TF Serving can "
            "load (2**63 - 1); there is no next version",
            hint="export into a fresh run directory (remove the out-of-range version)",
        )
    return following


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    ci = env.ci_context()
    # CI checkouts are detached; the CI variables name the branch the pipeline ran for.
    ref = (
        ci.get("CI_COMMIT_REF_NAME")
        or ci.get("GITHUB_REF_NAME")
        or git("rev-parse", "--abbrev-ref", "HEAD")
    )
    commit = git("rev-parse", "HEAD") or ci.get("CI_COMMIT_SHA") or ci.get("GITHUB_SHA")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "ref": ref, "dirty": bool(status) if status is not None else None}
