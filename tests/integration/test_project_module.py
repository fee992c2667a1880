"""A team's model module at the repository root is importable by the `tfship` console script
(issue 15: CI jobs and the training image run `tfship` from the checkout, and the console
script, unlike `python -m`, does not put the working directory on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfship.cli import project_on_path

ROOT_MODULE = """
import keras


def build(input_shape, num_classes):
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))
"""


@pytest.mark.parametrize(
    ("path", "appended"),
    [
        (["/lib"], True),  # the console script: the project directory is missing
        (["", "/lib"], False),  # python -m / python -c: "" already means the cwd
        (["/proj", "/lib"], False),  # already there
    ],
)
def test_the_project_directory_is_appended_once_and_never_shadows_libraries(
    monkeypatch: pytest.MonkeyPatch, path: list[str], appended: bool
) -> None:
    monkeypatch.setattr(sys, "path", list(path))
    project_on_path("/proj")
    assert sys.path == [*path, "/proj"] if appended else sys.path == path
    assert sys.path[0] == path[0]  # appended, so a project `yaml.py` cannot shadow PyYAML


@pytest.mark.slow
def test_the_console_script_trains_a_model_module_at_the_repository_root(tmp_path: Path) -> None:
    (tmp_path / "team_models.py").write_text(ROOT_MODULE)
    tfship = Path(sys.executable).with_name("tfship")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFSHIP_")}
    proc = subprocess.run(
        [
            str(tfship),
            "train",
            "--set",
            "model.builder=team_models:build",
            "--set",
            "train.epochs=1",
            "--set",
            "data.limit=200",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "train.json").is_file()
