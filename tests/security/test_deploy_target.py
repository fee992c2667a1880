"""A CI deploy with no serving target fails loudly instead of publishing into the job's
workspace (issue 15: with TFSHIP_SERVING_REST_URL unset, deploy published into a throwaway
./models and exited 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfship.config import load_config
from tfship.errors import ConfigError
from tfship.serving.target import resolve

GITLAB_DEPLOY = {"CI": "true", "GITLAB_CI": "true", "CI_JOB_ID": "9"}


@pytest.mark.parametrize(
    ("job", "repository", "server", "to", "refused"),
    [
        # The documented CI setup with the serving variables forgotten: refused.
        (GITLAB_DEPLOY, "models", False, "staging", True),
        (GITLAB_DEPLOY, "{workspace}/models", False, "production", True),
        ({"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "5"}, "models", False, "staging", True),
        # Places that outlive the job: a server that polls the repository reads them.
        (GITLAB_DEPLOY, "s3://bucket/models", False, "staging", False),
        (GITLAB_DEPLOY, "{shared}/models", False, "staging", False),
        # A server to deploy to: the repository location is its business.
        (GITLAB_DEPLOY, "models", True, "staging", False),
        # The local quick start publishes to ./models on purpose.
        ({}, "models", False, "staging", False),
        ({}, "models", False, None, False),
    ],
)
def test_a_ci_deploy_without_a_server_must_publish_somewhere_that_outlives_the_job(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    job: dict[str, str],
    repository: str,
    server: bool,
    to: str | None,
    refused: bool,
) -> None:
    workspace, shared = tmp_path / "checkout", tmp_path / "shared"
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    for name, value in job.items():
        monkeypatch.setenv(name, value)
    if job.get("GITLAB_CI"):
        monkeypatch.setenv("CI_PROJECT_DIR", str(workspace))
    sets = [f"serving.model_repository={repository.format(workspace=workspace, shared=shared)}"]
    if server:
        sets += ["serving.rest_url=http://127.0.0.1:1", "serving.grpc_target=127.0.0.1:2"]
    cfg = load_config(None, env={}, overrides=sets)
    if repository.startswith("s3://"):
        pytest.importorskip("boto3")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    if refused:
        with pytest.raises(ConfigError, match="has no serving target") as exc:
            resolve(cfg, to)
        assert "TFSHIP_SERVING_REST_URL" in str(exc.value)
        return
    assert resolve(cfg, to).model == cfg.project.model_name
