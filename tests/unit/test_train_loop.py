"""The training loop's chunking: several steps per compiled call must not change what is trained,
where checkpoints fall, or which step a divergence is reported at."""

from __future__ import annotations

import json
import logging

import pytest

from tests.unit.test_checkpoints import make_cfg, make_splits, state_steps
from tfship.errors import DataError, TrainingDiverged
from tfship.rundir import RunDir
from tfship.train import run_train
from tfship.train_steps import chunk_end
from tfship.training_report import Progress


@pytest.mark.parametrize(
    ("step", "limit", "boundaries", "end"),
    [
        (0, 10, (19, 285, None), 10),  # nothing in the way: a full call
        (10, 10, (19, 285, None), 19),  # stops at the epoch end
        (19, 10, (19, 285, 25), 25),  # stops at the periodic checkpoint
        (25, 10, (19, 285, 25), 35),
        (280, 10, (19, 285, None), 285),  # stops at the last step
        (7, 1, (19, 285, 3), 8),  # steps_per_execution=1: one step per call
        (38, 10, (19, 285, 19), 48),  # on a boundary: the next multiple, not the same step
    ],
)
def test_a_call_never_crosses_an_epoch_end_a_checkpoint_or_the_last_step(
    step, limit, boundaries, end
):
    assert chunk_end(step, limit, *boundaries) == end


def test_progress_logs_when_a_call_crosses_a_multiple_of_log_every(caplog):
    progress = Progress("log", total=30, initial=0, every=4, enabled=True)
    with caplog.at_level(logging.INFO, logger="tfship.training_report"):
        for step, steps in ((3, 3), (6, 3), (7, 1), (8, 1), (18, 10), (30, 12)):
            progress.update(step, steps, 1, {"loss": 0.5, "rmse": 0.9})
    logged = [r.getMessage().split("/")[0] for r in caplog.records]
    # The task's own training metrics are shown, whatever they are.
    assert "loss 0.5000 rmse 0.9000" in caplog.records[0].getMessage()
    # 6 crosses 4, 8 is a multiple, 18 crosses 12 and 16, 30 is the last step.
    assert logged == ["step 6", "step 8", "step 18", "step 30"]


@pytest.mark.slow
def test_steps_per_execution_trains_the_same_model_and_saves_at_the_same_steps(tmp_path):
    results = {}
    for spe in (1, 5):
        run_dir = RunDir(tmp_path / f"spe{spe}")
        cfg = make_cfg(train={"steps_per_execution": spe, "epochs": 3}, checkpoint={"keep": 5})
        results[spe] = run_train(cfg, run_dir, splits=make_splits())
        assert state_steps(run_dir.checkpoints) == [4, 8, 12, 16, 18]
        history = json.loads(run_dir.train_json.read_text())["history"]
        assert [h["steps"] for h in history] == [6, 6, 6]
    one, five = results[1], results[5]
    assert one.steps == five.steps == five.optimizer_iterations == 18
    assert one.weights_sha256 == five.weights_sha256
    assert one.metrics == pytest.approx(five.metrics, rel=1e-6)


@pytest.mark.slow
def test_a_nan_inside_a_call_is_reported_at_its_own_step_and_nothing_is_saved(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    cfg = make_cfg(
        train={"steps_per_execution": 10, "learning_rate": 1e18}, checkpoint={"every_steps": None}
    )
    with pytest.raises(TrainingDiverged) as err:
        run_train(cfg, run_dir, splits=make_splits())
    record = json.loads(run_dir.train_json.read_text())
    assert record["status"] == "diverged"
    # One call covers steps 1-6 (the epoch); the first non-finite loss comes after step 1.
    assert 1 < record["steps"] < 6
    assert f"training diverged at step {record['steps']}: the loss is NaN or Inf" in str(err.value)
    assert "no checkpoint yet" in str(err.value)
    assert not list(run_dir.checkpoints.glob("ckpt-*"))


class RecordingBackup:
    """What run_train asks of a backup handed to it (`tfship train` opens it before TF)."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def restore(self) -> None:
        self.calls.append("restore")

    def sync(self) -> None:
        self.calls.append("sync")

    def close(self, *, preempted: bool = False) -> None:
        self.calls.append(("close", preempted))


def test_a_backup_handed_in_is_used_and_closed_once_at_the_end(tmp_path):
    backup = RecordingBackup()
    run_train(make_cfg(), RunDir(tmp_path / "run"), splits=make_splits(), backup=backup)
    assert backup.calls[0] == "restore"
    assert "sync" in backup.calls
    assert backup.calls[-1] == ("close", False)
    assert backup.calls.count(("close", False)) == 1


def test_a_run_that_fails_before_training_still_closes_the_backup(tmp_path):
    # The data cannot be read: the agent, started before any of this, must not be left behind.
    cfg = make_cfg(data={"source": "npz", "path": str(tmp_path / "missing.npz")})
    backup = RecordingBackup()
    with pytest.raises(DataError):
        run_train(cfg, RunDir(tmp_path / "run"), backup=backup)
    assert backup.calls == [("close", True)]
