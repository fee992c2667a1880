"""An export is verified once: a later offline check of the same bytes reads the record export
wrote; other bytes, another TensorFlow or a stricter tolerance mean the full check again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit import test_export as helpers
from tfship import verify as verify_mod
from tfship.errors import ModelError
from tfship.rundir import RunDir
from tfship.verify import verify_export
from tfship.verify_record import record_path


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
