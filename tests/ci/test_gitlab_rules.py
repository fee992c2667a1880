"""GitLab pipeline rules as tables: (pipeline source, branch, protected, fork, variables) -> the
exact set of jobs, read from the real .gitlab-ci.yml by gitlab-ci-local (--list-json)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ci import gitlab_local

pytestmark = pytest.mark.integration

ALL_ON = dict.fromkeys(gitlab_local.DISABLE_SWITCHES, "false")

CHECKS = {"lint", "unit-tests", "config-scan"}
SMOKE = {"smoke-train", "smoke-validate", "smoke-report"}
BUILD_TRAIN_GATE = {"build-image", "scan-image", "train", "evaluate", "validate"}
PRODUCTION = {"deploy-production-canary", "promote-production", "rollback-production"}
GPU_OR_DEPLOY = BUILD_TRAIN_GATE | {"deploy-staging"} | PRODUCTION


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
        "push to the protected default branch",
        "protected-push",
        "main",
        {},
        CHECKS | BUILD_TRAIN_GATE | {"deploy-staging"} | PRODUCTION,
    ),
    (
        "push to a protected release branch",
        "protected-push",
        "release/1.0",
        {"CI_DEFAULT_BRANCH": "main"},
        CHECKS | BUILD_TRAIN_GATE | {"deploy-staging"},
    ),
    (
        "schedule on the default branch",
        "schedule",
        "main",
        {},
        CHECKS | BUILD_TRAIN_GATE | {"deploy-staging"} | PRODUCTION,
    ),
    (
        "API trigger on the default branch",
        None,
        "main",
        {"CI_PIPELINE_SOURCE": "trigger", "CI_COMMIT_REF_PROTECTED": "true"},
        CHECKS | BUILD_TRAIN_GATE | {"deploy-staging"} | PRODUCTION,
    ),
    (
        "API call on the default branch",
        None,
        "main",
        {"CI_PIPELINE_SOURCE": "api", "CI_COMMIT_REF_PROTECTED": "true"},
        CHECKS | BUILD_TRAIN_GATE | {"deploy-staging"} | PRODUCTION,
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
        CHECKS | BUILD_TRAIN_GATE - {"train"} | {"deploy-staging"} | PRODUCTION,
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
    assert "ci/gpu-preflight" in train["script"][0]
    retried = {name for name, job in config.items() if isinstance(job, dict) and "retry" in job}
    assert retried == {"train"}


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
