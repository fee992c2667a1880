"""The backup agent process: restores, uploads on sync, answers close with its status, reports
errors as the trainer's own error types, survives the preemption signal, and stays free of
TensorFlow (its whole point is to keep that work off the trainer's interpreter)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import tfship
import tfship.backup
from tests.helpers.checkpoint_files import remote_steps, save
from tfship.backup import BackupAgent
from tfship.backup.store import LocalStore
from tfship.config import PipelineConfig
from tfship.errors import ConfigError


def agent_for(tmp_path: Path, url: str, **backup: object) -> tuple[BackupAgent, Path]:
    cfg = PipelineConfig.model_validate(
        {"backup": {"enabled": True, "url": url, "every_seconds": 0, **backup}}
    )
    ckpt_dir = tmp_path / "checkpoints"
    return BackupAgent(cfg.backup, ckpt_dir, url, chief=True), ckpt_dir


def test_the_agent_imports_neither_tensorflow_keras_nor_pydantic() -> None:
    code = (
        "import sys, tfship.backup, tfship.backup.agent;"
        "heavy = ('tensorflow', 'keras', 'pydantic');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _FakeTrainModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Stands in for tfship.train (and so TensorFlow's import), noting when it is imported."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "tfship.train":
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        self.events.append("import tfship.train")

        def run_train(cfg: Any, run_dir: Any, *, backup: Any) -> str:
            self.events.append(("run_train", backup))
            return "trained"

        module.run_train = run_train  # type: ignore[attr-defined]


def test_tfship_train_starts_the_agent_before_importing_tensorflow_and_hands_it_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfship.commands.train import _handle

    events: list[Any] = []

    def open_training_backup(cfg: Any, run_dir: Any, *, chief: bool) -> str:
        events.append(("open", chief))
        return "the backup"

    monkeypatch.setattr(tfship.backup, "open_training_backup", open_training_backup)
    monkeypatch.setattr(sys, "meta_path", [_FakeTrainModule(events), *sys.meta_path])
    # The real module (when an earlier test imported it) comes back afterwards, also as the
    # package attribute the import sets.
    real = sys.modules.pop("tfship.train", None)
    try:
        args = types.SimpleNamespace(config=None, overrides=[], run_dir=str(tmp_path / "run"))
        assert _handle(args) == "trained"  # type: ignore[arg-type]
    finally:
        sys.modules.pop("tfship.train", None)
        if real is None:
            vars(tfship).pop("train", None)
        else:
            sys.modules["tfship.train"] = tfship.train = real  # type: ignore[attr-defined]
    assert events == [("open", True), "import tfship.train", ("run_train", "the backup")]


def test_the_agent_uploads_what_the_trainer_syncs_and_reports_it_on_close(tmp_path: Path) -> None:
    remote = str(tmp_path / "remote")
    agent, ckpt_dir = agent_for(tmp_path, remote)
    assert agent.restore() is None  # nothing local, nothing remote
    save(ckpt_dir, 10)
    agent.sync()
    save(ckpt_dir, 20)
    agent.sync()
    status = agent.close()
    assert status is not None and status.pending == () and status.failures == 0
    assert status.last_step == 20
    assert remote_steps(LocalStore(remote))[-1] == 20
    assert agent._proc.returncode == 0  # the agent exited after answering


def test_a_fresh_directory_is_restored_by_the_agent(tmp_path: Path) -> None:
    remote = str(tmp_path / "remote")
    first, ckpt_dir = agent_for(tmp_path / "a", remote)
    first.restore()
    save(ckpt_dir, 30)
    first.close()
    fresh, fresh_dir = agent_for(tmp_path / "b", remote)
    assert fresh.restore() == 30
    assert (fresh_dir / "ckpt-30.index").read_bytes() == b"index"
    fresh.close()


def test_the_preemption_signal_does_not_stop_the_agent_before_the_last_upload(
    tmp_path: Path,
) -> None:
    remote = str(tmp_path / "remote")
    agent, ckpt_dir = agent_for(tmp_path, remote)
    agent.restore()
    save(ckpt_dir, 40)
    agent._proc.send_signal(signal.SIGTERM)  # the whole process group gets it on preemption
    status = agent.close(preempted=True)
    assert status is not None and status.last_step == 40
    assert remote_steps(LocalStore(remote)) == [40]


def test_a_store_the_agent_cannot_open_is_the_trainers_config_error(tmp_path: Path) -> None:
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed here")
    agent, _ = agent_for(tmp_path, "gs://bucket/prefix")
    with pytest.raises(ConfigError, match=r"needs fsspec and gcsfs"):
        agent.restore()
    assert agent.close() is None
