"""The real .gitlab-ci.yml end to end with gitlab-ci-local (shell executor, artifact isolation):
the merge-request pipeline and the protected-branch pipeline, manual production jobs included.

Smoke-sized: the training size comes in through the same TFSHIP_* variables a project would set
in GitLab. Left out on purpose, each covered elsewhere: lint and unit-tests (`.ci/run` runs
`make lint-ci` and the whole suite itself; tests/ci/test_gitlab_rules.py proves they are in the
pipelines), build-image and scan-image (they need a Docker daemon and a registry), and the GPU
(EXPECTED_GPUS=0 makes ci/gpu-preflight a no-op on this CPU machine).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from tests.ci import gitlab_local

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VENV_BIN = gitlab_local.REPO_ROOT / ".venv" / "bin"
SMOKE = {
    "TFSHIP_SKIP_INSTALL": "true",
    "LINT_DISABLED": "true",
    "UNIT_TESTS_DISABLED": "true",
    "SMOKE_MAX_STEPS": "20",
    "SMOKE_DATA_LIMIT": "300",
    "TFSHIP_GATE_LATENCY_RUNS": "5",
}


def _run(sandbox: Path, *, pipeline: str, variables: dict[str, str], args: list[str]):
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TFSHIP_SKIP_INSTALL": "true",
    }
    proc = gitlab_local.run(
        sandbox,
        ["--shell-isolation", "--concurrency", "2", *args],
        pipeline=pipeline,
        variables=variables,
        env=env,
        timeout=1500,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def _summary(log: str, verdict: str) -> set[str]:
    """Job names gitlab-ci-local's closing summary lists as PASS / FAIL."""
    pattern = rf"^\s*{verdict}\s+(?:\[[^\]]*\]\s+)?(\S+)\s*$"
    return set(re.findall(pattern, log, flags=re.MULTILINE))


def _artifact(sandbox: Path, job: str, pattern: str) -> list[Path]:
    return sorted((sandbox / ".gitlab-ci-local" / "artifacts" / job).glob(pattern))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gitlab_local.require_binary()
    return tmp_path_factory.mktemp("gitlab-e2e")


def test_merge_request_pipeline_runs_to_success_and_passes_the_export_between_jobs(
    sandbox: Path,
) -> None:
    log = _run(sandbox / "mr", pipeline="merge-request", variables=SMOKE, args=[])
    assert _summary(log, "PASS") == {"config-scan", "smoke-train", "smoke-validate", "smoke-report"}
    assert not _summary(log, "FAIL")
    root = sandbox / "mr"
    exports = _artifact(root, "smoke-train", "runs/*/export/*/saved_model.pb")
    assert len(exports) == 1
    train = json.loads(next(iter(_artifact(root, "smoke-train", "runs/*/train.json"))).read_text())
    assert train["replicas"] == 2, "the smoke run must use MirroredStrategy over 2 logical CPUs"
    # smoke-validate and smoke-report ran on smoke-train's export (artifacts, not a shared dir)
    assert _artifact(root, "smoke-report", "runs/*/evaluation/report.md")
    assert _artifact(root, "smoke-validate", "runs/*/validation.json")


def test_protected_branch_pipeline_trains_gates_deploys_staging_then_production_by_hand(
    sandbox: Path, tmp_path: Path
) -> None:
    root = sandbox / "protected"
    root.mkdir()
    staging, production = tmp_path / "staging-models", tmp_path / "production-models"
    # Environment-scoped, as the model repository would be in Settings > CI/CD > Variables.
    variables_file = tmp_path / "variables.yml"
    variables_file.write_text(
        yaml.safe_dump(
            {
                "TFSHIP_SERVING_MODEL_REPOSITORY": {
                    "values": {"staging": str(staging), "production": str(production)}
                }
            }
        )
    )
    variables = {
        **SMOKE,
        "CI_COMMIT_BRANCH": "main",
        "CONFIG_SCAN_DISABLED": "true",
        "BUILD_IMAGE_DISABLED": "true",
        "SCAN_IMAGE_DISABLED": "true",
        "EXPECTED_GPUS": "0",
        "TFSHIP_TRAIN_MAX_STEPS": "20",
        "TFSHIP_DATA_LIMIT": "300",
        "TFSHIP_TRAIN_EPOCHS": "1",
        # A 20-step model cannot meet pipeline.yaml's thresholds, and an override only counts
        # in a job a person started (the manual `gate-override` job; gitlab-ci-local does not
        # set CI_JOB_MANUAL), so the project lowers its bar the way a project would.
        "TFSHIP_GATE_ABSOLUTE": '{"accuracy": {"min": 0.0}}',
    }
    log = _run(
        root,
        pipeline="protected-push",
        variables=variables,
        args=[
            # gitlab-ci-local reads it as <cwd>/<path>: relative to the sandbox
            "--variables-file",
            os.path.relpath(variables_file, root),
            "--manual",
            "deploy-production-canary",
            "--manual",
            "promote-production",
        ],
    )
    # rollback-production is manual and was not asked for: it must not have run
    assert _summary(log, "PASS") == {
        "train", "evaluate", "validate", "deploy-staging", "deploy-production-canary",
        "promote-production",
    }  # fmt: skip
    assert not _summary(log, "FAIL")

    gate = json.loads(
        next(iter(_artifact(root, "evaluate", "runs/*/evaluation/gate.json"))).read_text()
    )
    assert gate["verdict"] == "passed", gate
    # each environment got its own model repository, with the same exported version
    published = {
        repo: [p.name for p in (repo / "digits").iterdir() if p.name.isdigit()]
        for repo in (staging, production)
    }
    assert all(len(v) == 1 for v in published.values()), published
    assert published[staging] == published[production], published
    deploy = json.loads(
        next(iter(_artifact(root, "promote-production", "runs/*/deploy.json"))).read_text()
    )
    assert "promote" in json.dumps(deploy)
