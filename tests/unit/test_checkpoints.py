from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from pydantic import BaseModel

from tests.helpers.preempt import preempt_before_call
from tfship.checkpoint_guard import NOT_RESULT_FIELDS, RESULT_FIELDS, classification
from tfship.checkpoints import (
    TrainingCheckpoints,
    check_guard,
    guard_record,
    restore_for_export,
)
from tfship.config import PipelineConfig
from tfship.data import Splits
from tfship.data.schema import Feature, Kind, Schema
from tfship.errors import ConfigError, DataError, ExitCode, ModelError, Preempted
from tfship.rundir import RunDir
from tfship.train import run_train, weights_digest

TINY_MODEL = {"builder": "tests.unit.user_models:tiny_mlp", "options": {"units": 8}}


def make_cfg(**sections) -> PipelineConfig:
    base = {
        "model": TINY_MODEL,
        "train": {"epochs": 2, "per_replica_batch_size": 16, "progress": "none"},
        "checkpoint": {"every_steps": 4, "keep": 2},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return PipelineConfig.model_validate(base)


def make_splits(fingerprint: str = "synthetic-1") -> Splits:
    rng = np.random.default_rng(0)

    def part(n):
        y = rng.integers(0, 3, n).astype(np.int64)
        # Class-dependent brightness, so there is something to learn.
        x = np.clip(rng.normal(60.0 + 70.0 * y[:, None, None, None], 20.0, (n, 8, 8, 1)), 0, 255)
        return x.astype(np.float32), y

    (xt, yt), (xv, yv), (xs, ys) = part(96), part(24), part(24)
    schema = Schema((Feature("pixels", Kind.IMAGE, "float32", (8, 8, 1)),), "label")
    return Splits(
        x_train={"pixels": xt},
        y_train=yt,
        x_val={"pixels": xv},
        y_val=yv,
        x_test={"pixels": xs},
        y_test=ys,
        label_names=("a", "b", "c"),
        schema=schema,
        fingerprint=fingerprint,
    )


SCHEMA = Schema((Feature("x", Kind.NUMERIC, "float32", (2,)),), "label")


def state_steps(directory: Path) -> list[int]:
    state = tf.train.get_checkpoint_state(str(directory))
    return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths)


def small_keeper(cfg: PipelineConfig, run_dir: RunDir, chief: bool = True):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    opt = keras.optimizers.Adam()
    opt.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    guard = guard_record(cfg, data_fingerprint="d", schema=SCHEMA, label_names=("a", "b"))
    keeper = TrainingCheckpoints(
        cfg, run_dir, model=model, optimizer=opt, step=step, chief=chief, guard=guard
    )
    return keeper, step


@pytest.mark.slow
def test_training_saves_every_n_steps_and_keeps_the_configured_generations(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    result = run_train(make_cfg(), run_dir, splits=make_splits())
    ckpts = run_dir.checkpoints
    assert result.steps == 12  # 2 epochs x (96 // 16) steps
    assert state_steps(ckpts) == [8, 12]  # saved at 4, 8, 12; keep=2
    assert not list(ckpts.glob("ckpt-4.*"))
    guard = json.loads((ckpts / "run.json").read_text())
    assert guard["trained"]["label_names"] == ["a", "b", "c"]
    assert guard["trained"]["schema"]["features"]["pixels"]["shape"] == [8, 8, 1]
    assert guard["trained"]["task"]["type"] == "classification"
    assert guard["run"] == {"run_id": "local", "pipeline": "local"}
    assert guard["config"]["train.learning_rate"] == 0.002
    best = json.loads((ckpts / "best" / "best.json").read_text())
    assert best["metric"] == "val_accuracy" and best["step"] == result.best_step
    train_json = json.loads(run_dir.train_json.read_text())
    assert train_json["status"] == "completed"
    assert [h["epoch"] for h in train_json["history"]] == [1, 2]
    assert set(train_json["history"][0]) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert run_dir.config.is_file()
    assert list((run_dir.tensorboard / "train").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_a_second_run_resumes_with_the_same_step_and_optimizer_state(tmp_path, monkeypatch):
    run_dir = RunDir(tmp_path / "run")
    with monkeypatch.context() as m:
        preempt_before_call(m, 1)
        with pytest.raises(Preempted, match="at step 6"):
            run_train(make_cfg(), run_dir, splits=make_splits())
    assert state_steps(run_dir.checkpoints) == [4, 6]  # a preempted run saves where it stops

    second = run_train(make_cfg(), run_dir, splits=make_splits())
    assert second.resumed_from_step == 6
    assert second.resumed_optimizer_iterations == 6
    assert second.steps == 12 and second.optimizer_iterations == 12
    history = json.loads(run_dir.train_json.read_text())["history"]
    assert [h["step"] for h in history][-1] == 12


@pytest.mark.slow
@pytest.mark.parametrize(
    ("changed_cfg", "fingerprint", "fragment"),
    [
        ({"model": {"options": {"units": 4}}}, "synthetic-1", "model.options.units: 8 -> 4"),
        (
            {"train": {"per_replica_batch_size": 8}},
            "synthetic-1",
            "train.per_replica_batch_size: 16 -> 8",
        ),
        ({"data": {"limit": 500}}, "synthetic-1", "data.limit: None -> 500"),
        ({}, "synthetic-2", "trained.data_fingerprint: 'synthetic-1' -> 'synthetic-2'"),
        ({"train": {"learning_rate": 0.01}}, "synthetic-1", "train.learning_rate: 0.002 -> 0.01"),
        ({"train": {"epochs": 3}}, "synthetic-1", "train.epochs: 2 -> 3"),
    ],
)
def test_resuming_with_changed_data_or_model_config_is_refused_with_a_fix(
    tmp_path, monkeypatch, changed_cfg, fingerprint, fragment
):
    run_dir = RunDir(tmp_path / "run")
    with monkeypatch.context() as m:
        preempt_before_call(m, 0)
        with pytest.raises(Preempted):
            run_train(make_cfg(), run_dir, splits=make_splits())
    with pytest.raises(ConfigError) as err:
        run_train(make_cfg(**changed_cfg), run_dir, splits=make_splits(fingerprint))
    assert fragment in str(err.value)
    assert "tfship run --fresh" in str(err.value)  # the hint says how to start over
    assert state_steps(run_dir.checkpoints) == [4]


@pytest.mark.slow
def test_restore_for_export_loads_best_and_latest_weights(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    cfg = make_cfg()
    result = run_train(cfg, run_dir, splits=make_splits())

    latest, info = restore_for_export(cfg, run_dir, which="latest", splits=make_splits())
    assert info["step"] == 12 and info["label_names"] == ["a", "b", "c"]
    assert weights_digest(latest) == result.weights_sha256

    best, info = restore_for_export(cfg, run_dir, which="best", splits=make_splits())
    assert info["step"] == result.best_step
    assert info["metric"] == "val_accuracy" and info["value"] == pytest.approx(result.best_value)
    out = best.predict(make_splits().x_test["pixels"], verbose=0)
    assert out.shape == (24, 3) and np.isfinite(out).all()

    with pytest.raises(ConfigError, match=r"different settings.*model\.options\.units: 8 -> 4"):
        restore_for_export(make_cfg(model={"options": {"units": 4}}), run_dir, splits=make_splits())

    # Other data (here: another fingerprint) would rebuild other preprocessing: refused.
    with pytest.raises(DataError, match=r"the data changed since training \(fingerprint\)"):
        restore_for_export(cfg, run_dir, splits=make_splits("other"))

    # A damaged best checkpoint is refused with the way out, never exported half-loaded.
    for shard in (run_dir.checkpoints / "best").glob("*.data-*"):
        shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ModelError, match="cannot restore") as err:
        restore_for_export(cfg, run_dir, which="best", splits=make_splits())
    assert "tfship run --fresh" in str(err.value)


def test_restore_for_export_without_training_says_to_train_first(tmp_path):
    with pytest.raises(ModelError, match="run `tfship train`"):
        restore_for_export(make_cfg(), RunDir(tmp_path), splits=make_splits())


def config_keys() -> list[str]:
    keys = []
    for section, info in PipelineConfig.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += [f"{section}.{field}" for field in ann.model_fields]
        else:
            keys.append(section)
    return keys


@pytest.mark.parametrize("key", config_keys())
def test_every_config_field_is_classified_as_changing_the_result_or_not(key):
    # A new field must be declared in tfship.checkpoint_guard: RESULT_FIELDS when it changes
    # the trained weights (or which of them are exported), NOT_RESULT_FIELDS with the reason.
    assert classification(key) is not None, f"classify {key} in tfship.checkpoint_guard"
    assert not (key in RESULT_FIELDS and key in NOT_RESULT_FIELDS)


def test_the_classification_names_no_field_that_does_not_exist():
    keys = set(config_keys())
    stale = [k for k in (*RESULT_FIELDS, *NOT_RESULT_FIELDS) if not k.endswith(".*")]
    assert [k for k in stale if k not in keys] == []


def test_guard_is_ignored_until_a_checkpoint_exists(tmp_path):
    cfg = make_cfg()
    old = guard_record(cfg, data_fingerprint="x", schema=SCHEMA, label_names=("a", "b"))
    (tmp_path / "run.json").write_text(json.dumps(old))
    new = guard_record(cfg, data_fingerprint="y", schema=SCHEMA, label_names=("a", "b"))
    check_guard(tmp_path, new)  # no checkpoint yet: nothing to protect


def test_best_checkpoint_is_replaced_only_when_the_metric_improves(tmp_path):
    keeper, _ = small_keeper(make_cfg(), RunDir(tmp_path))
    assert keeper.save_best_if_better(1, {"val_accuracy": 0.5})
    assert not keeper.save_best_if_better(2, {"val_accuracy": 0.4})
    assert keeper.save_best_if_better(3, {"val_accuracy": 0.6})
    best = json.loads((tmp_path / "checkpoints" / "best" / "best.json").read_text())
    assert (best["step"], best["value"]) == (3, 0.6)
    assert state_steps(tmp_path / "checkpoints" / "best") == [3]

    keeper, _ = small_keeper(
        make_cfg(checkpoint={"best_metric": "val_loss", "best_mode": "min"}), RunDir(tmp_path / "m")
    )
    assert keeper.save_best_if_better(1, {"val_loss": 0.5})
    assert not keeper.save_best_if_better(2, {"val_loss": 0.7})


def test_a_non_chief_worker_saves_to_a_temporary_directory_that_is_removed(tmp_path):
    keeper, step = small_keeper(make_cfg(), RunDir(tmp_path), chief=False)
    step.assign(4)
    keeper.save(4)
    keeper.save_best_if_better(4, {"val_accuracy": 0.9})
    assert not (tmp_path / "checkpoints").exists()
    assert keeper._tmp is not None and not keeper._tmp.exists()


def test_an_unknown_best_metric_is_refused_when_the_config_is_loaded(tmp_path):
    # pydantic's ValidationError is a ValueError; load_config turns it into a ConfigError.
    with pytest.raises(ValueError, match=r"checkpoint\.best_metric='val_f1' is not a metric"):
        make_cfg(checkpoint={"best_metric": "val_f1"})


def corrupt(directory: Path, generation: str, how: str) -> None:
    """Damage one generation the way a bad disk or a partial copy would."""
    if how == "truncated data shard":
        (shard,) = directory.glob(f"{generation}.data-*")
        os.truncate(shard, 10)
    elif how == "garbage index":
        (directory / f"{generation}.index").write_bytes(b"not an sstable" * 8)
    elif how == "missing index":
        (directory / f"{generation}.index").unlink()
    else:
        raise ValueError(how)


def saved_generations(cfg: PipelineConfig, run_dir: RunDir, steps=(4, 8)) -> dict[int, list]:
    """Save one generation per step with recognisable weights; returns the weights by step."""
    keeper, step = small_keeper(cfg, run_dir)
    assert keeper.restore_latest() is None  # fresh: writes run.json
    model = keeper.checkpoint.model
    weights = {}
    for n in steps:
        model.set_weights([np.full(w.shape, float(n), np.float32) for w in model.weights])
        step.assign(n)
        keeper.save(n)
        weights[n] = model.get_weights()
    keeper.close()
    return weights


@pytest.mark.parametrize("how", ["truncated data shard", "garbage index", "missing index"])
def test_a_corrupt_newest_generation_is_skipped_and_the_previous_one_restored(
    tmp_path, caplog, how
):
    cfg, run_dir = make_cfg(), RunDir(tmp_path)
    ckpts = run_dir.checkpoints
    weights = saved_generations(cfg, run_dir)
    corrupt(ckpts, "ckpt-8", how)
    damaged = sorted(p.name for p in ckpts.glob("ckpt-8.*"))

    keeper, step = small_keeper(cfg, run_dir)
    with caplog.at_level(logging.WARNING, logger="tfship.checkpoints"):
        assert keeper.restore_latest() == 4
    assert int(step.numpy()) == 4
    for got, want in zip(keeper.checkpoint.model.get_weights(), weights[4], strict=True):
        np.testing.assert_array_equal(got, want)
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(ckpts / "ckpt-8") in warning and "cannot be restored" in warning

    # The state names the good generation, and the damaged files are kept aside, not deleted.
    assert tf.train.latest_checkpoint(str(ckpts)) == str(ckpts / "ckpt-4")
    assert state_steps(ckpts) == [4]
    assert not list(ckpts.glob("ckpt-8.*"))
    (aside,) = (ckpts / "corrupt").glob("ckpt-8-*")
    assert sorted(p.name for p in aside.iterdir()) == damaged

    # The next save with the same step number is a good generation again.
    step.assign(8)
    keeper.save(8)
    assert state_steps(ckpts) == [4, 8]
    again, step = small_keeper(cfg, run_dir)
    assert again.restore_latest() == 8 and int(step.numpy()) == 8


@pytest.mark.slow
def test_training_resumes_from_the_previous_generation_when_the_newest_is_truncated(
    tmp_path, caplog, monkeypatch
):
    run_dir = RunDir(tmp_path / "run")
    with monkeypatch.context() as m:
        preempt_before_call(m, 2)
        with pytest.raises(Preempted, match="at step 8"):
            run_train(make_cfg(), run_dir, splits=make_splits())
    assert state_steps(run_dir.checkpoints) == [4, 8]
    corrupt(run_dir.checkpoints, "ckpt-8", "truncated data shard")

    with caplog.at_level(logging.WARNING, logger="tfship.checkpoints"):
        result = run_train(make_cfg(), run_dir, splits=make_splits())
    assert result.resumed_from_step == 4 and result.resumed_optimizer_iterations == 4
    assert result.steps == 12 and result.optimizer_iterations == 12
    assert any("ckpt-8" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert state_steps(run_dir.checkpoints) == [8, 12]
    assert list((run_dir.checkpoints / "corrupt").glob("ckpt-8-*/ckpt-8.index"))


def test_when_no_generation_restores_resume_fails_with_a_model_error_and_a_fix(tmp_path):
    cfg, run_dir = make_cfg(), RunDir(tmp_path)
    ckpts = run_dir.checkpoints
    saved_generations(cfg, run_dir)
    corrupt(ckpts, "ckpt-8", "truncated data shard")
    corrupt(ckpts, "ckpt-4", "garbage index")

    keeper, _ = small_keeper(cfg, run_dir)
    with pytest.raises(ModelError) as err:
        keeper.restore_latest()
    assert err.value.exit_code == ExitCode.MODEL == 6
    message = str(err.value)
    assert f"none of the checkpoints in {ckpts} can be restored" in message
    assert "ckpt-8: " in message and "ckpt-4: " in message
    assert f"delete {ckpts}" in message and "tfship run --fresh" in message
    assert "run.run_id" in message
    # Nothing is moved when there is nothing to fall back to.
    assert state_steps(ckpts) == [4, 8] and not (ckpts / "corrupt").exists()


def test_checkpoints_without_run_json_are_refused_with_a_config_error(tmp_path):
    cfg, run_dir = make_cfg(), RunDir(tmp_path)
    saved_generations(cfg, run_dir)
    (run_dir.checkpoints / "run.json").unlink()

    keeper, _ = small_keeper(cfg, run_dir)
    with pytest.raises(ConfigError) as err:
        keeper.restore_latest()
    assert err.value.exit_code == ExitCode.CONFIG
    message = str(err.value)
    assert f"{run_dir.checkpoints} holds training checkpoints (ckpt-8, ckpt-4)" in message
    assert "no run.json" in message and "tfship run --fresh" in message
    assert not (run_dir.checkpoints / "run.json").exists()  # not silently re-created
