"""The real .gitlab-ci.yml end to end with gitlab-ci-local (shell executor, artifact isolation):
the merge-request pipeline and the protected-branch pipeline, manual production jobs included.

Smoke-sized: sizes that only change *how* a job runs (steps, epochs) come in through the TFSHIP_*
variables a project would set in GitLab; what decides whether a model ships (the gate's
thresholds, the data limit, the first-deploy flag) is committed to the sandbox's pipeline.yaml,
as a team would commit it: in a protected pipeline such fields from a CI variable are refused.
Left out on purpose, each covered elsewhere: lint and unit-tests (`.ci/run` runs
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
    "TFSHIP_GATE_LATENCY_RUNS": "20",  # the fewest a p95 gate accepts
}


def _run(
    sandbox: Path,
    *,
    pipeline: str,
    variables: dict[str, str],
    args: list[str],
    overlay: Path | None = None,
):
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TFSHIP_SKIP_INSTALL": "true",
    }
    if overlay is not None:
        # files committed on top of the work tree in the sandbox (ci/gitlab-local)
        env["CI_LOCAL_OVERLAY"] = str(overlay)
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


def _committed_smoke_config(overlay: Path) -> Path:
    """The repository's pipeline.yaml with the changes a team commits for a smoke-sized model.

    A 20-step model cannot meet the shipped thresholds, and an override only counts in a job a
    person started (gitlab-ci-local does not set CI_JOB_MANUAL), so the project lowers its bar
    in the committed file. The change thresholds stay: the evaluate job is given the model
    repository the champion lives in, and `gate.first_run` says this is the first deploy.
    """
    config = yaml.safe_load((gitlab_local.REPO_ROOT / "pipeline.yaml").read_text())
    config.setdefault("data", {})["limit"] = 300
    gate = config.setdefault("gate", {})
    gate["absolute"] = {"accuracy": {"min": 0.0}}
    assert gate.get("change"), "the test wants the change thresholds to be checked"
    gate["first_run"] = True
    overlay.mkdir(parents=True, exist_ok=True)
    (overlay / "pipeline.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return overlay


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
        # what a project that builds its image elsewhere sets (a digest, never a tag); the shell
        # executor does not pull it, ci/image-ref checks its form
        "TRAIN_IMAGE_REF": "registry.example.invalid/tfship/train@sha256:" + "0" * 64,
        "TFSHIP_TRAIN_MAX_STEPS": "20",
        "TFSHIP_TRAIN_EPOCHS": "1",
        # Read access to the production repository for the champion lookup: a protected
        # variable that is not environment-scoped (docs/ci.md), here a local directory.
        "TFSHIP_GATE_CHAMPION_REPOSITORY": str(production),
    }
    production.mkdir()
    log = _run(
        root,
        pipeline="protected-push",
        variables=variables,
        overlay=_committed_smoke_config(tmp_path / "committed"),
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
    # the bar came from the committed file, and the champion lookup found a repository
    assert gate["first_run"] is True and gate["no_repository"] is False, gate
    # each environment got its own model repository, with the same exported version
    published = {
        repo: [p.name for p in (repo / "digits").iterdir() if p.name.isdigit()]
        for repo in (staging, production)
    }
    assert all(len(v) == 1 for v in published.values()), published
    assert published[staging] == published[production], published
    # provenance: the manifest names the image that trained the model, as ci/image-ref checked it
    manifest = json.loads(
        (
            staging / "digits" / published[staging][0] / "assets.extra" / "tfship-manifest.json"
        ).read_text()
    )
    assert manifest["image_digest"] == variables["TRAIN_IMAGE_REF"]
    deploy = json.loads(
        next(iter(_artifact(root, "promote-production", "runs/*/deploy.json"))).read_text()
    )
    assert "promote" in json.dumps(deploy)
