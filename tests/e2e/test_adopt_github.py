"""Issue 15's proof on GitHub, as far as it runs here: the adopted project's pull-request
workflow (ci.yml -> _checks.yml, _smoke.yml), its jobs' `run:` steps executed in order with
the environment GitHub gives them, by tests/e2e/github_steps_harness.py, a stand-in for
GitHub's runner (not GitHub Actions; checkout/setup-python/artifacts are replaced by local
equivalents, anything else would raise). The rule tables (which jobs exist for which event)
are tests/ci/test_github_workflows.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.e2e import adopt_harness as h
from tests.e2e.github_steps_harness import Runner

VENV_BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def pull_request_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("adopt-github")
    project = h.create_project(tmp / "team-repo", files=h.GITHUB_TEMPLATE_FILES)
    runner = Runner(
        repo=project,
        event_name="pull_request",
        event={"pull_request": {"number": 7, "head": {"repo": {"fork": False}}}},
        ref="refs/pull/7/merge",
        # repository variables (vars.*); the API a closed local port: nothing leaves the box
        variables={"LINT_DISABLED": "true", "_API_URL": "http://127.0.0.1:9"},
        secrets={"GITHUB_TOKEN": "ghs_standin_read_write_token"},
        # a self-hosted runner's .env: tfship preinstalled (docs/adopt.md, step 1)
        runner_env={
            "TFSHIP_SKIP_INSTALL": "true",
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        },
        root=tmp / "runner",
    )
    runner.run_workflow(project / ".github" / "workflows" / "ci.yml")
    return runner


def test_the_github_copy_list_in_docs_ci_md_is_what_the_team_copies() -> None:
    assert h.documented_copy_list("GitHub") == set(h.GITHUB_TEMPLATE_FILES)


def test_pull_request_jobs_run_their_steps_in_order_and_pass(pull_request_run: Runner) -> None:
    results = pull_request_run.results
    status = {name: r.status for name, r in results.items()}
    assert status["checks/lint"] == "skipped"  # vars.LINT_DISABLED
    for job in ("checks/unit-tests", "smoke/smoke-train", "smoke/smoke-validate",
                "smoke/smoke-report"):  # fmt: skip
        assert status[job] == "success", (job, results[job].log[-4000:])
    steps = [s for s, _ in results["smoke/smoke-train"].steps]
    assert steps.index("tfship train") < steps.index("tfship export")


def test_the_report_lands_in_the_job_summary_and_the_comment_failure_is_only_a_warning(
    pull_request_run: Runner,
) -> None:
    report = pull_request_run.results["smoke/smoke-report"]
    assert "shapes" in report.summary and "accuracy" in report.summary, report.summary[:2000]
    assert "report not posted" in report.log or "GitHub API" in report.log, report.log[-3000:]
