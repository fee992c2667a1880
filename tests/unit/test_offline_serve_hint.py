"""The command an offline deploy prints to serve its repository with docker/serving/compose.yaml."""

from __future__ import annotations

from pathlib import Path

from tfship.config import load_config
from tfship.serving.target import offline_serve_hint, resolve

COMPOSE_UP = "docker compose -f docker/serving/compose.yaml up"


def _hint(project: Path, **sets: str) -> str:
    cfg = load_config(None, overrides=[f"{k}={v}" for k, v in sets.items()])
    return offline_serve_hint(resolve(cfg), project_root=project)


def test_the_default_repository_is_what_compose_mounts_so_the_plain_command_is_printed(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _hint(tmp_path) == COMPOSE_UP


def test_a_repository_elsewhere_is_passed_to_compose_as_model_repository(tmp_path: Path) -> None:
    repo = tmp_path / "elsewhere" / "models"
    hint = _hint(tmp_path / "project", **{"serving.model_repository": str(repo)})
    assert hint == f"MODEL_REPOSITORY={repo.resolve()} {COMPOSE_UP}"


def test_base_paths_outside_the_compose_mount_are_called_out(tmp_path: Path) -> None:
    hint = _hint(
        tmp_path,
        **{
            "serving.model_repository": str(tmp_path / "models"),
            "serving.server_model_repository": "/srv/tf",
        },
    )
    assert hint.startswith(COMPOSE_UP)
    assert "base_path /srv/tf/digits" in hint and "unset serving.server_model_repository" in hint


def test_an_s3_repository_is_copied_locally_first(tmp_path: Path) -> None:
    hint = _hint(tmp_path, **{"serving.model_repository": "s3://bucket/serving"})
    assert "s3://bucket/serving" in hint and f"MODEL_REPOSITORY=DIR {COMPOSE_UP}" in hint
