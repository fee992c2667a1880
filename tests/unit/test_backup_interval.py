"""`backup.every_seconds`: the training loop's sync() uploads at most that often, counted from
the start; the newest generation held back is uploaded by close(), after a normal end or a
preemption alike."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.checkpoint_files import remote_steps, save
from tfship.backup import TrainingBackup
from tfship.backup.store import LocalStore
from tfship.config import PipelineConfig


def wait_for(store: LocalStore, steps: list[int]) -> None:
    deadline = time.monotonic() + 10
    while remote_steps(store) != steps:
        assert time.monotonic() < deadline, f"remote holds {remote_steps(store)}, not {steps}"
        time.sleep(0.02)


def open_backup(tmp_path: Path, every_seconds: float) -> tuple[TrainingBackup, LocalStore, Path]:
    cfg = PipelineConfig.model_validate(
        {
            "backup": {
                "enabled": True,
                "url": str(tmp_path / "remote"),
                "every_seconds": every_seconds,
                "keep": 5,
                "include_best": False,
            }
        }
    )
    store = LocalStore(str(tmp_path / "remote"))
    ckpt_dir = tmp_path / "checkpoints"
    return TrainingBackup(cfg.backup, ckpt_dir, store), store, ckpt_dir


@pytest.mark.parametrize("preempted", [False, True])
def test_saves_within_the_interval_are_held_back_and_close_uploads_the_newest(
    tmp_path: Path, preempted: bool
) -> None:
    backup, store, ckpt_dir = open_backup(tmp_path, every_seconds=60)
    for step in (10, 20, 30):
        save(ckpt_dir, step)
        backup.sync()
    time.sleep(0.3)
    assert remote_steps(store) == []  # all three came within 60 s of the start
    status = backup.close(preempted=preempted)
    assert status is not None and status.pending == ()
    assert remote_steps(store) == [30]  # the newest; 10 and 20 were never worth uploading
    assert status.uploaded == ("ckpt-30",)


def test_once_the_interval_has_passed_the_next_save_is_uploaded(tmp_path: Path) -> None:
    backup, store, ckpt_dir = open_backup(tmp_path, every_seconds=0.5)
    save(ckpt_dir, 10)
    backup.sync()
    time.sleep(0.6)
    save(ckpt_dir, 20)
    backup.sync()
    wait_for(store, [20])
    save(ckpt_dir, 30)
    backup.sync()  # within 0.5 s of the last upload: held back until close
    status = backup.close()
    assert status is not None and status.uploaded == ("ckpt-20", "ckpt-30")
    assert remote_steps(store) == [20, 30]


def test_with_every_seconds_zero_each_save_is_uploaded(tmp_path: Path) -> None:
    backup, store, ckpt_dir = open_backup(tmp_path, every_seconds=0)
    for step in (10, 20, 30):
        save(ckpt_dir, step)
        backup.sync()
        wait_for(store, list(range(10, step + 1, 10)))
    backup.close()
    assert remote_steps(store) == [10, 20, 30]
