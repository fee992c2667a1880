"""GitLab pipeline rules as tables: (pipeline source, branch, protected, fork, variables) -> the
exact set of jobs, read from the real .gitlab-ci.yml by gitlab-ci-local (--list-json)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.ci import gitlab_local

pytestmark = pytest.mark.integration

ALL_ON = dict.fromkeys(gitlab_local.DISABLE_SWITCHES, "false")

CHECKS = {"lint", "unit-tests", "config-scan"}
SMOKE = {"smoke-train", "smoke-validate", "smoke-report"}
BUILD_TRAIN_GATE = {"build-image", "scan-image", "train", "evaluate", "validate"}
PRODUCTION = {"deploy-production-canary", "promote-production", "rollback-production"}
GPU_OR_DEPLOY = BUILD_TRAIN_GATE | {"deploy-staging", "gate-override"} | PRODUCTION
# what trains and deploys on a protected branch; gate-override is its manual escape hatch
PROTECTED = BUILD_TRAIN_GATE | {"deploy-staging", "gate-override"}
# schedules / trigger / API calls: checks, then the data check and its child pipeline only
DATA_TRIGGERED = CHECKS | {"data-check", "retrain"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gitlab_local.require_binary()
    return tmp_path_factory.mktemp("gitlab-rules")


# (id, preset, branch, extra variables, expected jobs)
TABLE = [
    ("merge request", "merge-request", "main", {}, CHECKS | SMOKE),
    ("merge request from a fork", "fork-merge-request", "main", {}, CHECKS | SMOKE),
    ("push to an unprotected branch", "push", "feature/x", {}, CHECKS),
    (
        "push to an unprotected branch with an open MR",
        "push",
        "feature/x",
        {"CI_OPEN_MERGE_REQUESTS": "tfship/tfship!1"},
        set(),
    ),
    (
        "push to the protected default branch trains whatever the data",
        "protected-push",
        "main",
        {},
        CHECKS | PROTECTED | PRODUCTION,
    ),
    (
        "push to a protected release branch",
        "protected-push",
        "release/1.0",
        {"CI_DEFAULT_BRANCH": "main"},
        CHECKS | PROTECTED,
    ),
    (
        "schedule on the default branch checks the data first",
        "schedule",
        "main",
        {},
        DATA_TRIGGERED,
    ),
    (
        "API trigger on the default branch",
        None,
        "main",
        {"CI_PIPELINE_SOURCE": "trigger", "CI_COMMIT_REF_PROTECTED": "true"},
        DATA_TRIGGERED,
    ),
    (
        "API call on the default branch",
        None,
        "main",
        {"CI_PIPELINE_SOURCE": "api", "CI_COMMIT_REF_PROTECTED": "true"},
        DATA_TRIGGERED,
    ),
    (
        "schedule with DATA_CHECK_DISABLED trains unconditionally",
        "schedule",
        "main",
        {"DATA_CHECK_DISABLED": "true"},
        CHECKS | PROTECTED | PRODUCTION,
    ),
    (
        "Run pipeline by a person on the default branch always trains",
        None,
        "main",
        {"CI_PIPELINE_SOURCE": "web", "CI_COMMIT_REF_PROTECTED": "true"},
        CHECKS | PROTECTED | PRODUCTION,
    ),
    (
        "retraining child pipeline on the default branch",
        None,
        "main",
        {"CI_PIPELINE_SOURCE": "parent_pipeline", "CI_COMMIT_REF_PROTECTED": "true"},
        PROTECTED | PRODUCTION,
    ),
    (
        "retraining child pipeline on a release branch",
        None,
        "release/1.0",
        {
            "CI_PIPELINE_SOURCE": "parent_pipeline",
            "CI_COMMIT_REF_PROTECTED": "true",
            "CI_DEFAULT_BRANCH": "main",
        },
        PROTECTED,
    ),
    (
        "the MR-reports schedule (TFSHIP_MR_REPORTS) runs only the job that posts them",
        "schedule",
        "main",
        {"TFSHIP_MR_REPORTS": "true"},
        {"mr-reports"},
    ),
    (
        "the MR-reports schedule off the default branch runs nothing",
        "schedule",
        "release/1.0",
        {"TFSHIP_MR_REPORTS": "true", "CI_DEFAULT_BRANCH": "main"},
        set(),
    ),
    (
        "TFSHIP_MR_REPORTS on a merge request changes nothing (no token job there)",
        "merge-request",
        "main",
        {"TFSHIP_MR_REPORTS": "true"},
        CHECKS | SMOKE,
    ),
    (
        "schedule on an unprotected branch",
        None,
        "feature/x",
        {"CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_REF_PROTECTED": "false"},
        set(),
    ),
    (
        "protected push with TRAIN_DISABLED",
        "protected-push",
        "main",
        {"TRAIN_DISABLED": "true"},
        CHECKS | PROTECTED - {"train"} | PRODUCTION,
    ),
    (
        "merge request with SMOKE_TRAIN_DISABLED and LINT_DISABLED",
        "merge-request",
        "main",
        {"SMOKE_TRAIN_DISABLED": "true", "LINT_DISABLED": "true"},
        CHECKS - {"lint"} | SMOKE - {"smoke-train"},
    ),
]


@pytest.mark.parametrize(
    ("preset", "branch", "variables", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_pipeline_contains_exactly_the_expected_jobs(
    sandbox: Path, preset: str | None, branch: str, variables: dict, expected: set
) -> None:
    variables = {**ALL_ON, **variables}
    if preset is None or preset.endswith("push") or preset == "schedule":
        variables.setdefault("CI_COMMIT_BRANCH", branch)
        variables.setdefault("CI_COMMIT_REF_NAME", branch)
    jobs = gitlab_local.list_jobs(sandbox, pipeline=preset, variables=variables)
    assert set(jobs) == expected


def test_fork_merge_request_never_reaches_a_gpu_runner_an_environment_or_a_secret(
    sandbox: Path,
) -> None:
    jobs = gitlab_local.list_jobs(sandbox, pipeline="fork-merge-request", variables=ALL_ON)
    assert not set(jobs) & GPU_OR_DEPLOY
    config = gitlab_local.preview(sandbox, pipeline="fork-merge-request", variables=ALL_ON)
    for name in jobs:
        job = config[name]
        assert "tags" not in job, f"{name} asks for runner tags {job.get('tags')}"
        assert "environment" not in job, f"{name} is bound to an environment"
        assert "resource_group" not in job
        assert "secrets" not in job, f"{name} requests external secrets"
        assert "id_tokens" not in job, f"{name} requests an OIDC token"


def test_protected_push_deploys_staging_automatically_and_production_only_by_hand(
    sandbox: Path,
) -> None:
    jobs = gitlab_local.list_jobs(
        sandbox, pipeline="protected-push", variables={**ALL_ON, "CI_COMMIT_BRANCH": "main"}
    )
    assert jobs["train"].when == "on_success"
    assert jobs["deploy-staging"].when == "on_success"
    for name in ("deploy-production-canary", "promote-production"):
        assert (jobs[name].when, jobs[name].allow_failure) == ("manual", False), name
    # the gate override is a person's decision and never blocks the pipeline
    assert (jobs["gate-override"].when, jobs["gate-override"].allow_failure) == ("manual", True)
    assert (jobs["rollback-production"].when, jobs["rollback-production"].allow_failure) == (
        "manual",
        True,
    )


def test_deploy_jobs_are_serialised_and_tracked_as_environment_deployments(sandbox: Path) -> None:
    config = gitlab_local.preview(
        sandbox, pipeline="protected-push", variables={**ALL_ON, "CI_COMMIT_BRANCH": "main"}
    )
    expected = {
        "deploy-staging": "staging",
        "gate-override": "staging",
        "deploy-production-canary": "production",
        "promote-production": "production",
        "rollback-production": "production",
    }
    for name, environment in expected.items():
        job = config[name]
        assert job["environment"]["name"] == environment
        assert job["environment"]["deployment_tier"] == environment
        assert job["resource_group"] == environment
        assert job["interruptible"] is False


def test_gpu_training_retries_only_when_preempted_and_runs_on_the_gpu_runner_tag(
    sandbox: Path,
) -> None:
    config = gitlab_local.preview(
        sandbox, pipeline="protected-push", variables={**ALL_ON, "CI_COMMIT_BRANCH": "main"}
    )
    train = config["train"]
    assert train["retry"] == {"max": 2, "exit_codes": [75]}
    assert train["tags"] == ["$GPU_RUNNER_TAG"]
    # the protected-ref guard first, then the preflight before anything trains
    assert train["script"][0].startswith("ci/require-protected ")
    assert train["script"].index("ci/gpu-preflight") < train["script"].index("tfship train")
    retried = {
        name: job["retry"]
        for name, job in config.items()
        if isinstance(job, dict) and "retry" in job
    }
    # besides training, only deploy jobs, and only when another deploy held the lease (exit 14)
    assert retried.pop("train") == {"max": 2, "exit_codes": [75]}
    assert retried and all(r == {"max": 2, "exit_codes": [14]} for r in retried.values())
    assert set(retried) == {
        n for n, j in config.items() if isinstance(j, dict) and "environment" in j
    }


def test_unit_tests_publish_junit_and_cobertura_reports(sandbox: Path) -> None:
    config = gitlab_local.preview(sandbox, pipeline="merge-request", variables=ALL_ON)
    reports = config["unit-tests"]["artifacts"]["reports"]
    assert reports["junit"] == "junit.xml"
    assert reports["coverage_report"] == {"coverage_format": "cobertura", "path": "coverage.xml"}


def test_every_job_has_its_own_disabled_switch_checked_first(sandbox: Path) -> None:
    config = gitlab_local.preview(sandbox, pipeline="merge-request", variables=ALL_ON)
    jobs = {k: v for k, v in config.items() if isinstance(v, dict) and "script" in v}
    for name, job in jobs.items():
        first = job["rules"][0]
        assert first["when"] == "never", name
        switch = first["if"].split()[0].lstrip("$")
        assert switch.endswith("_DISABLED") and switch in gitlab_local.DISABLE_SWITCHES, name
        assert switch in config["variables"], f"{switch} has no default in ci/gitlab/variables.yml"
        assert "only" not in job and "except" not in job, f"{name} uses only/except, not rules"


def _data_check(tmp_path: Path, tfship_exit: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    """ci/data-check with a stand-in `tfship` that exits `tfship_exit` (`data changed`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tfship"
    fake.write_text(f'#!/bin/sh\necho "stand-in tfship $*"\nexit {tfship_exit}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    child = tmp_path / "retrain-child.yml"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DATA_CHECK_SINCE", None)
    env.pop("RETRAIN_CHILD_CONFIG", None)
    env["CI_CONFIG_PATH"] = ".gitlab-ci.yml"
    proc = subprocess.run(
        [str(gitlab_local.REPO_ROOT / "ci" / "data-check"), str(child)],
        cwd=gitlab_local.REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc, child


@pytest.mark.parametrize(
    ("tfship_exit", "branch", "expected"),
    [
        pytest.param(0, "main", PROTECTED | PRODUCTION, id="data changed: train on main"),
        pytest.param(0, "release/1.0", PROTECTED, id="data changed: train on a release branch"),
        pytest.param(12, "main", {"no-new-data"}, id="data unchanged: no training"),
    ],
)
def test_scheduled_retraining_trains_only_when_the_data_changed(
    sandbox: Path, tmp_path: Path, tfship_exit: int, branch: str, expected: set
) -> None:
    proc, child = _data_check(tmp_path, tfship_exit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "data changed --since=champion" in proc.stdout
    # the child pipeline GitLab would create from the artifact, with its own pipeline source
    jobs = gitlab_local.list_jobs(
        sandbox,
        args=["--file", os.path.relpath(child, sandbox)],
        variables={
            **ALL_ON,
            "CI_PIPELINE_SOURCE": "parent_pipeline",
            "CI_COMMIT_REF_PROTECTED": "true",
            "CI_COMMIT_BRANCH": branch,
            "CI_COMMIT_REF_NAME": branch,
            "CI_DEFAULT_BRANCH": "main",
        },
    )
    assert set(jobs) == expected


@pytest.mark.parametrize("tfship_exit", [3, 8, 1], ids=["config error", "infra error", "crash"])
def test_a_broken_data_check_fails_the_job_instead_of_skipping_training(
    tmp_path: Path, tfship_exit: int
) -> None:
    proc, child = _data_check(tmp_path, tfship_exit)
    assert proc.returncode == tfship_exit
    assert "failing instead of skipping" in proc.stderr
    assert not child.exists(), "no child pipeline may be written when the check itself failed"
