"""Issue 15's proof: adopt the template from scratch, exactly as docs/adopt.md walks through it.

A NEW git repository (not a mirror of tfship) made of the files docs/ci.md says to copy, the
team's model module at its root (team_model.py), its own committed data (300 8x8 PNGs in class
folders) and its pipeline.yaml; then its own copy of ci/gitlab-local (gitlab-ci-local, shell
executor) with only the variables docs/ci.md documents:

1. the merge-request pipeline runs with NO token and posts nothing; a scheduled pipeline on
   main (TFSHIP_MR_REPORTS=true, the protected token) then posts exactly one note to a stand-in
   of GitLab's API, rendered from that MR pipeline's report artifact;
2. the protected-branch pipeline, twice, against the TF Serving stand-in and moto (S3) as the
   model repository and checkpoint backup: the first deploys staging (labels change on the
   server), the second's gate compares with that champion;
3. a deploy job with no serving URL fails with the documented exit code and message;
4. a preempted (SIGTERM) training job's retry, on a clean workspace, resumes from S3.

What is not real: the executor is the shell (the job images are not pulled: tfship comes from
this venv with TFSHIP_SKIP_INSTALL=true, as from a CI image with tfship installed), GitLab's
protected/masked variable handling (the test passes only what GitLab would pass each
pipeline), GitLab's side of the MR pipeline (the stand-in serves the artifact files the
smoke-report job left, under the pipeline and job ids the harness gave it), and the three
stand-ins (notes API, TF Serving, S3), each named as such.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e import adopt_harness as h
from tests.e2e.adopt_harness import MODEL
from tfship.report import HEADLINES, MARKER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """One adopted project, sandbox and set of stand-ins for the whole module."""
    if not h.GCL_BIN.exists():
        pytest.skip(f"{h.GCL_BIN} missing: make ci-local-setup")
    pytest.importorskip("boto3")
    with h.adopted_world(tmp_path_factory.mktemp("adopt")) as world:
        yield world


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-8000:]
    return log


def _json(paths: list[Path]) -> dict:
    assert paths, "artifact missing"
    return json.loads(paths[-1].read_text())


def _label_version(world: dict, label: str) -> int | None:
    url = f"{world['server'].rest_url}/v1/models/{MODEL}/labels/{label}/metadata"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(json.load(resp)["model_spec"]["version"])
    except urllib.error.HTTPError:
        return None


def test_the_copy_list_in_docs_ci_md_is_what_the_team_copies() -> None:
    assert h.documented_copy_list() == set(h.TEMPLATE_FILES)


def test_merge_request_pipeline_holds_no_token_and_posts_nothing(world: dict) -> None:
    sandbox = world["sandbox"] / "mr"
    variables = h.mr_variables(world)
    assert "TFSHIP_GITLAB_TOKEN" not in variables  # protected: never in an MR pipeline
    started = time.monotonic()
    log = _ok(h.run_pipeline(world["project"], sandbox, "merge-request", variables))
    world["mr_seconds"] = time.monotonic() - started
    # lint too: ruff on the team's own files with its settings, ci/lint on its GitLab files
    assert h.summary(log, "PASS") == {
        "lint", "unit-tests", "config-scan", "smoke-train", "smoke-validate", "smoke-report",
    }  # fmt: skip
    assert not h.summary(log, "FAIL")
    train = _json(h.artifacts(sandbox, "smoke-train", "runs/*/train.json"))
    assert train["replicas"] == 2
    # nothing reached the API: no note, no upload, no call at all
    assert world["notes"].requests == [] and not world["notes"].notes
    # the report as data for the scheduled job, and for people (the exposed artifact)
    data = _json(h.artifacts(sandbox, "smoke-report", h.REPORT_FILE))
    assert data["merge_request_iid"] == 1 and data["pipeline_id"] == h.MR_PIPELINE_ID
    assert h.artifacts(sandbox, "smoke-report", "mr-report/report.md")
    world["mr_pipeline"] = h.serve_mr_pipeline(world, sandbox)


def test_a_scheduled_pipeline_on_main_posts_one_note_from_that_mr_pipeline(world: dict) -> None:
    if "mr_pipeline" not in world:
        pytest.skip("the merge-request pipeline did not run")
    sandbox = world["sandbox"] / "mr-reports"
    started = time.monotonic()
    log = _ok(
        h.run_pipeline(
            world["project"], sandbox, "schedule", h.mr_reports_schedule_variables(world)
        )
    )
    world["mr_reports_seconds"] = time.monotonic() - started
    assert h.summary(log, "PASS") == {"mr-reports"}, log[-4000:]
    notes = world["notes"].notes_on("1000", 1)
    assert len(notes) == 1, world["notes"].requests
    body, data = notes[0].body, json.loads(world["mr_pipeline"]["report"].read_text())
    assert body.startswith(MARKER)
    assert f"pipeline={h.MR_PIPELINE_ID} job={h.MR_REPORT_JOB_ID}" in body
    assert "evaluation of !1" in body and HEADLINES[data["verdict"]] in body
    assert data["checks"], data
    for check in data["checks"]:
        name = f"by {check['feature']} (slice)" if check["feature"] else f"({check['kind']})"
        assert f"| {check['metric']} {name} |" in body, body
    # plots are links to the job's artifacts, never uploads of files a branch made
    assert not world["notes"].uploads and "![" not in body
    assert "/-/jobs/70001/artifacts/browse/mr-report/" in body
    assert all(auth == "private" for *_, auth in world["notes"].requests)
    # the stand-in checks the token, as GitLab does: another one is refused
    wrong = urllib.request.Request(
        f"{world['notes'].url}/projects/1000/merge_requests/1/notes",
        headers={"PRIVATE-TOKEN": "glpat-someone-else"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10)
    assert refused.value.code == 401


def _protected_run(world: dict, name: str) -> tuple[Path, str]:
    variables, env_file = h.protected_variables(world)
    sandbox = world["sandbox"] / "protected"
    started = time.monotonic()
    proc = h.run_pipeline(
        world["project"], sandbox, "protected-push", variables, variables_file=env_file
    )
    world[f"{name}_seconds"] = time.monotonic() - started
    log = _ok(proc)
    passed = h.summary(log, "PASS")
    # the checks (lint, and unit-tests: the team's own tests) run on protected pipelines too
    expected = {"lint", "unit-tests", "train", "evaluate", "validate", "deploy-staging"}
    assert passed == expected, log[-4000:]
    return sandbox, log


def test_first_protected_pipeline_deploys_staging_for_real(world: dict) -> None:
    assert _label_version(world, "stable") is None
    sandbox, _ = _protected_run(world, "protected_1")
    gate = _json(h.artifacts(sandbox, "evaluate", "runs/*/evaluation/gate.json"))
    assert gate["verdict"] == "passed", gate
    assert gate["first_run"] is True and gate["no_repository"] is False, gate
    version = int(gate["candidate"]["version"])
    # the server (not a file): the first deploy labels the version canary and stable
    assert _label_version(world, "canary") == version
    assert _label_version(world, "stable") == version
    keys = world["s3"].list_objects_v2(Bucket="team-models", Prefix=f"staging/{MODEL}/{version}/")
    assert keys.get("KeyCount", 0) > 0
    assert not world["sync"].errors, world["sync"].errors
    world["champion"] = version


def test_second_protected_pipeline_gates_against_that_champion(world: dict) -> None:
    if "champion" not in world:
        pytest.skip("the first protected pipeline did not deploy")
    sandbox, _ = _protected_run(world, "protected_2")
    gate = _json(h.artifacts(sandbox, "evaluate", "runs/*/evaluation/gate.json"))
    assert gate["champion"]["version"] == world["champion"], gate
    assert gate["champion"]["label"] == "stable" and gate["first_run"] is False
    change = [c for c in gate["checks"] if c["kind"] == "change"]
    assert {c["metric"] for c in change} == {"accuracy"}, gate["checks"]
    # evaluated against the champion's numbers, not skipped
    assert all(c["baseline"] is not None for c in change), change
    assert _label_version(world, "canary") == int(gate["candidate"]["version"])


def test_a_deploy_with_no_serving_url_fails_with_exit_3_naming_the_variables(
    world: dict,
) -> None:
    if "champion" not in world:
        pytest.skip("needs the protected pipeline's artifacts")
    variables, _ = h.protected_variables(world)  # no environment file: staging's are missing
    sandbox = world["sandbox"] / "protected"
    proc = h.run_pipeline(
        world["project"], sandbox, "protected-push", variables, ["deploy-staging"]
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "deploy-staging" in h.summary(log, "FAIL"), log[-4000:]
    job_log = h.job_log(sandbox, "deploy-staging")
    assert "has no serving target" in job_log and "TFSHIP_SERVING_REST_URL" in job_log, job_log
    assert "(exit code 3: invalid configuration" in job_log, job_log[-3000:]


def test_a_preempted_training_job_resumes_from_the_object_store_on_a_clean_workspace(
    world: dict,
) -> None:
    sandbox = world["sandbox"] / "preempt"
    result = h.preempt_and_retry(world, sandbox)
    # attempt 1: SIGTERM -> checkpoint saved and backed up -> exit 75 (GitLab retries on it)
    assert result["first_exit"] != 0 and "train" in h.summary(result["first_out"], "FAIL")
    assert "(exit code 75: preempted" in result["first_log"], result["first_log"][-3000:]
    # attempt 2, an empty workspace: the only checkpoint it can find is in S3
    assert result["retry_exit"] == 0, result["retry_out"][-6000:]
    train = _json(h.artifacts(sandbox, "train", "runs/*/train.json"))
    assert train["resumed_from_step"] and train["resumed_from_step"] > 0, train
    assert result["preempt_to_first_new_step_s"] is not None, result["retry_log"][-3000:]
