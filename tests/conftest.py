"""Session-wide test setup.

TensorFlow is quietened before anything imports it, and every test runs from the repository
root (the stand-in model server is started as `python -m tests.tfserving_standin`).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _no_ambient_tfship_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's TFSHIP_* or CI variables must not change what a test sees.
    for key in list(os.environ):
        if key.startswith("TFSHIP_") and key != "TFSHIP_MODEL_SERVER":
            monkeypatch.delenv(key, raising=False)
    # The CI job the suite itself runs in (tfship.config.trust): in a protected pipeline it
    # would make every test's --set of a gate threshold "a CI job no person started".
    for key in (
        *("CI", "GITLAB_CI", "GITHUB_ACTIONS", "CI_JOB_ID", "GITHUB_RUN_ID", "CI_JOB_MANUAL"),
        *("CI_PIPELINE_SOURCE", "GITHUB_EVENT_NAME", "CI_PROJECT_DIR", "GITHUB_WORKSPACE"),
    ):
        monkeypatch.delenv(key, raising=False)
