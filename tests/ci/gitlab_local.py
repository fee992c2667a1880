"""Drive the real .gitlab-ci.yml through gitlab-ci-local (via ci/gitlab-local) from tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "ci" / "gitlab-local"
BINARY = REPO_ROOT / "build" / "tools" / "node_modules" / ".bin" / "gitlab-ci-local"

# Every job's *_DISABLED switch, so a table can turn them all off ("false") and test the rules.
DISABLE_SWITCHES = (
    "LINT_DISABLED", "UNIT_TESTS_DISABLED", "CONFIG_SCAN_DISABLED", "SMOKE_TRAIN_DISABLED",
    "VALIDATE_DISABLED", "REPORT_DISABLED", "BUILD_IMAGE_DISABLED", "SCAN_IMAGE_DISABLED",
    "TRAIN_DISABLED", "EVALUATE_DISABLED", "DEPLOY_STAGING_DISABLED",
    "DEPLOY_PRODUCTION_DISABLED", "ROLLBACK_DISABLED", "DATA_CHECK_DISABLED",
    "GATE_OVERRIDE_DISABLED", "MR_REPORTS_DISABLED", "RELEASE_DISABLED",
)  # fmt: skip


class GitlabCiLocalMissing(RuntimeError):
    pass


def require_binary() -> None:
    if not BINARY.exists():
        raise GitlabCiLocalMissing(
            f"{BINARY} is missing; install it with `make ci-local-setup` "
            "(npm install gitlab-ci-local@4.72.0, plus Debian's rsync)"
        )


@dataclass(frozen=True)
class Job:
    name: str
    when: str
    allow_failure: bool
    stage: str


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # No ambient CI/TFSHIP variable may leak into what the pipeline sees.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TFSHIP_", "CI_", "GITLAB_", "GCL_"))
    }
    env.update(extra or {})
    return env


def run(
    sandbox: Path,
    args: Iterable[str],
    *,
    pipeline: str | None = None,
    variables: Mapping[str, str] | None = None,
    unset: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """ci/gitlab-local with a preset (CI_LOCAL_PIPELINE) plus `--variable`s, in `sandbox`."""
    require_binary()
    argv = [str(SCRIPT)]
    for key, value in (variables or {}).items():
        argv += ["--variable", f"{key}={value}"]
    for key in unset:
        argv += ["--unset-variable", key]
    argv += list(args)
    extra = {"CI_LOCAL_SANDBOX": str(sandbox), **(env or {})}
    if pipeline:
        extra["CI_LOCAL_PIPELINE"] = pipeline
    return subprocess.run(
        argv, cwd=REPO_ROOT, env=_env(extra), capture_output=True, text=True, timeout=timeout
    )


def list_jobs(sandbox: Path, args: Iterable[str] = (), **kwargs: object) -> dict[str, Job]:
    """The jobs a pipeline would contain (when != never), by name; `args` e.g. `--file`."""
    proc = run(sandbox, ["--list-json", "--no-json-schema-validation", *args], **kwargs)  # type: ignore[arg-type]
    if proc.returncode != 0:
        raise AssertionError(
            f"gitlab-ci-local --list-json failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    # the JSON array starts on its own line, after gitlab-ci-local's log lines
    match = re.search(r"^\[", proc.stdout, flags=re.MULTILINE)
    data = json.loads(proc.stdout[match.start() :]) if match else []
    return {
        j["name"]: Job(j["name"], j["when"], bool(j["allow_failure"]), j["stage"])
        for j in data
        if j["when"] != "never"
    }


def preview(sandbox: Path, **kwargs: object) -> dict:
    """The configuration with includes, extends and !reference expanded (--preview)."""
    proc = run(sandbox, ["--preview", "--no-json-schema-validation"], **kwargs)  # type: ignore[arg-type]
    if proc.returncode != 0:
        raise AssertionError(f"gitlab-ci-local --preview failed:\n{proc.stderr[-3000:]}")
    out = proc.stdout
    # --preview prints the YAML after gitlab-ci-local's own log lines.
    start = out.find("---")
    return yaml.safe_load(out[start:] if start >= 0 else out)
