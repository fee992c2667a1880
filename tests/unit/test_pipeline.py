from __future__ import annotations

from pathlib import Path

import pytest

from tfship import pipeline
from tfship.cli import main
from tfship.config import load_config
from tfship.errors import ConfigError
from tfship.rundir import RunDir


def test_fresh_refuses_to_delete_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="does not look like a run directory"):
        pipeline.run_pipeline(load_config(None, env={}), RunDir(project), fresh=True)
    assert (project / "precious.txt").read_text() == "keep me"


def test_run_stops_at_the_first_stage_with_a_non_zero_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class Verdict:
        exit_code = 7

    def stage(name: str, result: object):
        def run(cfg, run_dir, shared):
            calls.append(name)
            return result

        return run

    monkeypatch.setattr(
        pipeline,
        "STAGES",
        [
            ("a", stage("a", None)),
            ("gate", stage("gate", Verdict())),
            ("deploy", stage("deploy", None)),
        ],
    )
    result = pipeline.run_pipeline(load_config(None, env={}), RunDir(tmp_path / "run"))
    assert calls == ["a", "gate"]
    assert result.exit_code == 7
    assert (tmp_path / "run" / "config.resolved.yaml").is_file()


def test_unknown_stage_to_skip_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--skip", "trian"])
    assert exc.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_the_data_is_loaded_once_and_shared_by_every_stage(monkeypatch, tmp_path) -> None:
    from tfship import data

    loads: list[object] = []
    seen: list[object] = []
    real = data.load_splits

    def counting(cfg):
        loads.append(cfg)
        return real(cfg)

    def stage(name: str):
        def run(cfg, run_dir, shared):
            seen.append(pipeline._splits(cfg, shared))

        return run

    monkeypatch.setattr(data, "load_splits", counting)
    monkeypatch.setattr(pipeline, "STAGES", [(n, stage(n)) for n in ("data", "train", "export")])
    pipeline.run_pipeline(load_config(None, env={}), RunDir(tmp_path / "run"))
    assert len(loads) == 1 and len(seen) == 3
    assert seen[0] is seen[1] is seen[2]


@pytest.mark.parametrize(
    ("skip", "prestarted"), [(frozenset(), True), (frozenset({"export"}), False)]
)
def test_the_loader_check_interpreter_starts_before_tensorflow_is_imported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, skip: frozenset[str], prestarted: bool
) -> None:
    import tfship.cpp_loader
    import tfship.distribute

    calls: list[str] = []
    monkeypatch.setattr(tfship.cpp_loader, "prestart", lambda: calls.append("prestart"))
    monkeypatch.setattr(tfship.distribute, "configure_devices", lambda _: calls.append("tf"))
    monkeypatch.setattr(pipeline, "STAGES", [])
    pipeline.run_pipeline(load_config(None, env={}), RunDir(tmp_path / "run"), skip=skip)
    # configure_devices is where `tfship run` first imports TensorFlow.
    assert calls == (["prestart", "tf"] if prestarted else ["tf"])
