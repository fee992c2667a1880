"""Issue 15's proof on GitHub, as far as it runs here: the adopted project's pull-request
workflow (ci.yml -> _checks.yml, _smoke.yml), its jobs' `run:` steps executed in order with
the environment GitHub gives them, by tests/e2e/github_steps_harness.py, a stand-in for
GitHub's runner (not GitHub Actions; checkout/setup-python/artifacts are replaced by local
equivalents, anything else would raise). The rule tables (which jobs exist for which event)
are tests/ci/test_github_workflows.py.

Of train.yml (a push to the protected main), only the GPU training job runs here: its `run:`
steps in order (require-protected, docker login, ci/train-in-container) with the docker
stand-in (the container's command runs on this machine, the runner's tfship standing in for
the image's), EXPECTED_GPUS=0 (no GPU here: ci/gpu-preflight checks nothing, so no nvidia-smi
is consulted), moto as the backup's S3. build-image is given (its digest output), not run:
BuildKit and a registry are not available here; scan, gate, validation and deploy do not run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import pytest

from tests.e2e import adopt_harness as h
from tests.e2e.github_steps_harness import JobResult, Runner, docker_standin

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
        variables={"_API_URL": "http://127.0.0.1:9"},
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
    # lint too: ruff on the team's files with its settings, ci/lint on its workflow files
    for job in ("checks/lint", "checks/unit-tests", "checks/config-scan", "smoke/smoke-train",
                "smoke/smoke-validate", "smoke/smoke-report"):  # fmt: skip
        assert status[job] == "success", (job, results[job].log[-4000:])
    steps = [s for s, _ in results["smoke/smoke-train"].steps]
    assert steps.index("tfship train") < steps.index("tfship export")


def test_the_report_lands_in_the_job_summary_and_the_comment_failure_is_only_a_warning(
    pull_request_run: Runner,
) -> None:
    report = pull_request_run.results["smoke/smoke-report"]
    assert "shapes" in report.summary and "accuracy" in report.summary, report.summary[:2000]
    assert "report not posted" in report.log or "GitHub API" in report.log, report.log[-3000:]


def test_the_config_and_secret_scan_runs_on_the_pull_request(pull_request_run: Runner) -> None:
    scan = pull_request_run.results["checks/config-scan"]
    assert [code for _, code in scan.steps] == [0] * len(scan.steps), scan.log[-3000:]
    steps = [s for s, _ in scan.steps]
    assert {"misconfigurations", "committed credentials", "scan results in the job summary"} <= set(
        steps
    )
    assert "`config`: config scan of `.`" in scan.summary, scan.summary[:2000]
    assert "`secrets`: fs scan of `.`" in scan.summary
    reports = pull_request_run.root / "artifacts" / "config-scan" / "runs" / "config-scan" / "scan"
    assert (reports / "config.sarif").is_file() and (reports / "secrets.sarif").is_file()


def test_unit_test_results_and_coverage_land_in_the_job_summary(pull_request_run: Runner) -> None:
    summary = pull_request_run.results["checks/unit-tests"].summary
    assert "## Unit tests" in summary and "**passed**:" in summary, summary[:2000]
    assert "| tests | passed | failed | errors | skipped | time |" in summary
    assert "## Coverage" in summary and "| lines | covered / valid | branches |" in summary


def test_the_plots_the_comment_points_at_are_uploaded(pull_request_run: Runner) -> None:
    report = pull_request_run.results["smoke/smoke-report"]
    # the comment (and the summary) point at the run's page for the plots ...
    run_page = "https://github.com/team/shapes/actions/runs/4200"
    assert f"see [the run's artifacts]({run_page})" in report.summary, report.summary[:3000]
    # ... and the run's artifacts hold every plot the report names, next to report.md
    stored = pull_request_run.root / "artifacts" / "evaluation-report"
    pngs = {p.name for p in stored.rglob("*.png")}
    named = set(re.findall(r"_([\w.-]+\.png): see ", report.summary))
    assert named and named <= pngs, (named, pngs)
    assert list(stored.rglob("report.md"))


IMAGE = "ghcr.io/team/shapes/train@sha256:" + "ab" * 32
KEY_ID, SECRET_KEY = "AKIASTANDINTRAINING1", "standin-backup-secret-0123456789"


@pytest.fixture(scope="module")
def protected_train_run(tmp_path_factory: pytest.TempPathFactory):
    import boto3

    from tests.helpers.moto import moto_server

    tmp = tmp_path_factory.mktemp("adopt-github-train")
    project = h.create_project(tmp / "team-repo", files=h.GITHUB_TEMPLATE_FILES)
    docker_standin(tmp / "bin")
    with moto_server() as moto:
        s3 = boto3.client("s3", endpoint_url=moto.url, aws_access_key_id=KEY_ID,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1")  # fmt: skip
        s3.create_bucket(Bucket="team-checkpoints")
        runner = Runner(
            repo=project,
            event_name="push",
            event={"ref": "refs/heads/main"},
            ref="refs/heads/main",
            ref_protected=True,
            # docs/ci.md: repository variables, and the `training` environment's secrets
            variables={
                "EXPECTED_GPUS": "0",
                "TFSHIP_BACKUP_URL": "s3://team-checkpoints/tfship",
                "TFSHIP_BACKUP_ENDPOINT_URL": moto.url,
            },
            secrets={
                "GITHUB_TOKEN": "ghs_standin_packages_read_token",
                "AWS_ACCESS_KEY_ID": KEY_ID,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            },
            # the GPU runner's .env: a short training (not a verdict field)
            runner_env={
                "PATH": f"{tmp / 'bin'}:{VENV_BIN}:/usr/bin:/bin",
                "DOCKER_STANDIN_LOG": str(tmp / "docker.log"),
                "TFSHIP_TRAIN_MAX_STEPS": "20",
                "TFSHIP_TRAIN_EPOCHS": "1",
            },
            root=tmp / "runner",
            run_id="4300",
            given={
                "train/build-image": JobResult("build-image", "success", outputs={"image": IMAGE}),
                "train/scan-image": JobResult("scan-image", "success"),
            },
            only={"train/train"},
        )
        runner.run_workflow(project / ".github" / "workflows" / "train.yml")
        listed = s3.list_objects_v2(Bucket="team-checkpoints", Prefix="tfship/")
        keys = [o["Key"] for o in listed.get("Contents", [])]
        # "Re-run failed jobs": the same run id on a fresh runner (nothing of the first
        # attempt's workspace): the job restores from the object store by itself
        retry = dataclasses.replace(runner, root=tmp / "runner-retry", results={})
        retry.run_workflow(project / ".github" / "workflows" / "train.yml")
    docker = [json.loads(line) for line in (tmp / "docker.log").read_text().splitlines()]
    return runner, keys, docker, retry


def test_gpu_training_runs_in_the_image_with_the_backup_settings_and_credentials(
    protected_train_run,
) -> None:
    runner, keys, docker, _ = protected_train_run
    job = runner.results["train/train"]
    assert job.status == "success", job.log[-4000:]
    assert job.environment == "training"
    assert [s for s, _ in job.steps][:3] == [
        "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683",
        "protected branches only",
        "log in to ghcr.io",
    ]
    run = next(d for d in docker if d["cmd"] == "run")
    assert run["image"] == IMAGE and run["gpus"] is None  # EXPECTED_GPUS=0
    for name in ("TFSHIP_BACKUP_URL", "TFSHIP_BACKUP_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "TFSHIP_EXPORT_IMAGE_DIGEST"):  # fmt: skip
        assert run["env"].get(name) == "set", (name, run["env"])  # by name, never in argv
    # tfship train used them: the checkpoints went to the object store, under this run's key
    assert any(k.startswith("tfship/shapes/main/run-4300-") for k in keys), keys
    # the secrets never reached a log
    assert SECRET_KEY not in job.log and KEY_ID not in job.log
    for result in runner.results.values():
        assert SECRET_KEY not in result.log


def test_the_export_records_the_image_it_was_trained_in(protected_train_run) -> None:
    runner = protected_train_run[0]
    stored = runner.root / "artifacts" / "run"
    manifests = list(stored.rglob("assets.extra/tfship-manifest.json"))
    assert manifests, "the run artifact holds no export"
    assert json.loads(manifests[0].read_text())["image_digest"] == IMAGE


def test_train_yml_runs_only_the_jobs_this_stand_in_can(protected_train_run) -> None:
    status = {k: r.status for k, r in protected_train_run[0].results.items()}
    assert status["train/train"] == "success"
    given = {k for k, r in protected_train_run[0].results.items() if r.given}
    assert given == {"train/build-image", "train/scan-image"}
    assert status["train/evaluate"] == status["train/validate"] == "not run"
    assert status["deploy-staging"] == "skipped"  # no gate verdict: nothing deploys


def _train_json(runner: Runner) -> dict:
    (path,) = (runner.root / "artifacts" / "run").rglob("train.json")
    return json.loads(path.read_text())


def test_a_rerun_of_the_training_job_resumes_from_the_object_store(protected_train_run) -> None:
    first, retry = protected_train_run[0], protected_train_run[3]
    job = retry.results["train/train"]
    assert job.status == "success", job.log[-4000:]
    assert _train_json(first)["resumed_from_step"] is None
    assert _train_json(retry)["resumed_from_step"] == _train_json(first)["steps"] > 0
