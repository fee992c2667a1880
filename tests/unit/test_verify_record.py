"""An export is verified once: a later offline check of the same bytes reads the record export
wrote; other bytes, another TensorFlow or a stricter tolerance mean the full check again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit import test_export as helpers
from tfship import verify as verify_mod
from tfship.errors import ModelError
from tfship.rundir import RunDir
from tfship.verify import verify_export
from tfship.verify_record import record_path, tensorflow_package


@pytest.fixture
def exported(tmp_path, monkeypatch):
    monkeypatch.setattr(verify_mod, "run_cpp_loader", helpers.session_loader)
    result = helpers.export(helpers.tiny_model(), RunDir(tmp_path / "run").ensure())
    return result.export_dir


@pytest.fixture
def loader_calls(monkeypatch):
    calls = []

    def counting(export_dir, inputs, *, timeout=0):
        calls.append(export_dir)
        return helpers.session_loader(export_dir, inputs)

    monkeypatch.setattr(verify_mod, "run_cpp_loader", counting)
    return calls


def test_export_writes_a_record_outside_the_version_directory(exported: Path):
    record = json.loads(record_path(exported).read_text())
    assert record_path(exported).parent == exported.parent
    assert record["format"] == "tfship-verified/1" and len(record["digest"]) == 64
    assert record["result"]["version"] == int(exported.name)


def test_the_same_bytes_are_not_checked_again(exported, loader_calls):
    result = verify_export(exported, reuse=True)
    assert loader_calls == [] and result.reused == str(record_path(exported))
    assert "not repeated" in result.render_text()


def _touch_variables(export_dir: Path) -> None:
    shard = next((export_dir / "variables").glob("*.data-*"))
    shard.write_bytes(shard.read_bytes() + b"\0")


def _edit_manifest(export_dir: Path) -> None:
    path = export_dir / "assets.extra" / "tfship-manifest.json"
    manifest = json.loads(path.read_text())
    manifest["golden"]["tolerance"] = 0.5
    path.write_text(json.dumps(manifest))


def _other_tensorflow(export_dir: Path) -> None:
    path = record_path(export_dir)
    record = json.loads(path.read_text())
    record["tensorflow"] = "2.1.0"
    path.write_text(json.dumps(record))


def _garbled(export_dir: Path) -> None:
    record_path(export_dir).write_text("{not json")


CHANGES = [
    ("a variables shard changed", _touch_variables),
    ("the manifest edited", _edit_manifest),
    ("another TensorFlow", _other_tensorflow),
    ("an unreadable record", _garbled),
]


@pytest.mark.parametrize(("what", "change"), CHANGES, ids=[c[0] for c in CHANGES])
def test_anything_but_the_recorded_bytes_gets_the_full_check(exported, loader_calls, what, change):
    change(exported)
    try:
        result = verify_export(exported, reuse=True)
    except ModelError:
        result = None  # the full check ran and refused the changed export: also right
    assert loader_calls == [exported], what
    assert result is None or result.reused is None


def test_a_stricter_tolerance_than_the_recorded_one_checks_again(exported, loader_calls):
    verify_export(exported, 1e-6, reuse=True)
    assert loader_calls == [exported]


def test_without_reuse_the_check_always_runs(exported, loader_calls):
    assert verify_export(exported).reused is None and loader_calls == [exported]


def test_a_failing_background_loader_fails_the_check(exported, monkeypatch):
    def broken(export_dir, inputs, *, timeout=0):
        raise ModelError("TF's C++ loader (saved_model_cli run) failed")

    monkeypatch.setattr(verify_mod, "run_cpp_loader", broken)
    with pytest.raises(ModelError, match="C\\+\\+ loader"):
        verify_export(exported)


def _other_tensorflow_package(export_dir: Path) -> None:
    path = record_path(export_dir)
    record = json.loads(path.read_text())
    record["tensorflow_package"] = "tensorflow 2.1.0"
    path.write_text(json.dumps(record))


def _record_without_package(export_dir: Path) -> None:
    path = record_path(export_dir)
    record = json.loads(path.read_text())
    del record["tensorflow_package"]  # written before records named the package
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    "change", [_other_tensorflow_package, _record_without_package], ids=["other", "none"]
)
def test_a_record_of_another_tensorflow_package_gets_the_full_check(exported, loader_calls, change):
    change(exported)
    assert verify_export(exported, reuse=True).reused is None
    assert loader_calls == [exported]


def test_the_record_names_the_tensorflow_package_without_importing_it(exported):
    record = json.loads(record_path(exported).read_text())
    assert record["tensorflow_package"] == tensorflow_package()


def test_a_digest_the_caller_computed_binds_the_reuse_like_one_computed_here(
    exported, loader_calls, monkeypatch
):
    from tfship.serving import repository

    digest = repository.tree_digest(exported)

    def no_second_pass(root):
        raise AssertionError("hashed again although the caller passed the digest")

    monkeypatch.setattr(repository, "tree_digest", no_second_pass)
    assert verify_export(exported, reuse=True, digest=digest).reused is not None
    assert loader_calls == []
    # A digest of other bytes (the files changed after the caller read them): full check.
    assert verify_export(exported, reuse=True, digest="0" * 64).reused is None
    assert loader_calls == [exported]


def test_deciding_to_reuse_a_record_imports_no_tensorflow(exported):
    # The deploy of a large model spent most of its time importing TensorFlow for this.
    code = (
        "import sys\n"
        "from tfship.verify import verify_export\n"
        f"result = verify_export({str(exported)!r}, reuse=True)\n"
        "assert result.reused, result\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_an_offline_deploy_hashes_the_export_once_and_publishes_what_was_verified(
    exported, loader_calls, monkeypatch, tmp_path
):
    from tfship.config import load_config
    from tfship.serving import deploy, repository, repository_local
    from tfship.serving.deploy import run_deploy

    run_dir = RunDir(exported.parent.parent)
    run_dir.evaluation.mkdir(parents=True, exist_ok=True)
    gate = {"verdict": "passed", "override": None}
    gate["candidate"] = {
        "path": str(exported),
        "version": int(exported.name),
        "digest": repository.tree_digest(exported),
    }
    (run_dir.evaluation / "gate.json").write_text(json.dumps(gate))
    reads: list[Path] = []
    real = repository.local_manifest

    def counting(root):
        reads.append(Path(root))
        return real(root)

    for module in (repository, repository_local, deploy):
        monkeypatch.setattr(module, "local_manifest", counting)
    cfg = load_config(
        None,
        env={},
        overrides=[f"serving.model_repository={tmp_path / 'models'}", "project.model_name=tiny"],
    )
    result = run_deploy(cfg, run_dir, reason="test", promote=True)
    assert result.offline_check.reused and loader_calls == []
    assert reads.count(exported) == 1  # the gate, the record and the copy share one reading
    published = tmp_path / "models" / "tiny" / exported.name
    assert real(published) == real(exported)


def _started(export_dir: Path, inputs):
    from concurrent.futures import Future

    future: Future = Future()
    future.set_result(helpers.session_loader(export_dir, inputs))
    return inputs, future


def test_a_loader_check_started_early_with_the_golden_inputs_stands_for_the_check(
    exported, loader_calls
):
    from tfship.serving.golden import golden_inputs, read_manifest

    inputs = golden_inputs(read_manifest(exported))
    result = verify_export(exported, started=_started(exported, inputs))
    assert loader_calls == [] and result.max_abs_diff["cpp"] == 0


def test_a_loader_check_started_early_with_other_inputs_is_run_again(exported, loader_calls):
    from tfship.serving.golden import golden_inputs, read_manifest

    inputs = {k: v.copy() for k, v in golden_inputs(read_manifest(exported)).items()}
    name = next(iter(inputs))
    inputs[name][0] += 1
    verify_export(exported, started=_started(exported, inputs))
    assert loader_calls == [exported]


def test_a_failed_early_loader_check_fails_the_export(tmp_path, monkeypatch):
    def broken(export_dir, inputs, *, timeout=0):
        raise ModelError("TF's C++ loader (saved_model_cli run) failed")

    monkeypatch.setattr(verify_mod, "run_cpp_loader", broken)
    run_dir = RunDir(tmp_path / "run").ensure()
    with pytest.raises(ModelError, match="C\\+\\+ loader"):
        helpers.export(helpers.tiny_model(), run_dir)
    assert [p.name for p in run_dir.export.iterdir()] == []  # nothing numeric, no leftovers
