from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfship.checkpoints import (
    TrainingCheckpoints,
    check_guard,
    guard_record,
    restore_for_export,
)
from tfship.config import PipelineConfig
from tfship.data import Splits
from tfship.errors import ConfigError, ModelError
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
    return Splits(xt, yt, xv, yv, xs, ys, ("a", "b", "c"), fingerprint)


def state_steps(directory: Path) -> list[int]:
    state = tf.train.get_checkpoint_state(str(directory))
    return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths)


def small_keeper(cfg: PipelineConfig, run_dir: RunDir, chief: bool = True):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    opt = keras.optimizers.Adam()
    opt.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    guard = guard_record(cfg, data_fingerprint="d", input_shape=(2,), class_names=("a", "b"))
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
    assert guard["num_classes"] == 3 and guard["input_shape"] == [8, 8, 1]
    best = json.loads((ckpts / "best" / "best.json").read_text())
    assert best["metric"] == "val_accuracy" and best["step"] == result.best_step
    train_json = json.loads(run_dir.train_json.read_text())
    assert train_json["status"] == "completed"
    assert [h["epoch"] for h in train_json["history"]] == [1, 2]
    assert set(train_json["history"][0]) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert run_dir.config.is_file()
    assert list((run_dir.tensorboard / "train").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_a_second_run_resumes_with_the_same_step_and_optimizer_state(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    first = run_train(make_cfg(train={"max_steps": 5}), run_dir, splits=make_splits())
    assert first.steps == 5 and first.resumed_from_step is None
    assert state_steps(run_dir.checkpoints) == [4, 5]  # the end of a run is always saved

    second = run_train(make_cfg(), run_dir, splits=make_splits())
    assert second.resumed_from_step == 5
    assert second.resumed_optimizer_iterations == 5
    assert second.steps == 12 and second.optimizer_iterations == 12
    history = json.loads(run_dir.train_json.read_text())["history"]
    assert [h["step"] for h in history][-1] == 12


@pytest.mark.slow
@pytest.mark.parametrize(
    ("changed_cfg", "fingerprint", "fragment"),
    [
        ({"model": {"options": {"units": 4}}}, "synthetic-1", "model.options"),
        (
            {"train": {"per_replica_batch_size": 8}},
            "synthetic-1",
            "per_replica_batch_size: 16 -> 8",
        ),
        ({"data": {"limit": 500}}, "synthetic-1", "data.limit: None -> 500"),
        ({}, "synthetic-2", "data_fingerprint"),
    ],
)
def test_resuming_with_changed_data_or_model_config_is_refused_with_a_fix(
    tmp_path, changed_cfg, fingerprint, fragment
):
    run_dir = RunDir(tmp_path / "run")
    run_train(make_cfg(train={"max_steps": 4}), run_dir, splits=make_splits())
    with pytest.raises(ConfigError) as err:
        run_train(make_cfg(**changed_cfg), run_dir, splits=make_splits(fingerprint))
    assert fragment in str(err.value)
    assert "run.run_id" in str(err.value)  # the hint says how to start over
    assert state_steps(run_dir.checkpoints) == [4]


@pytest.mark.slow
def test_restore_for_export_loads_best_and_latest_weights(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    cfg = make_cfg()
    result = run_train(cfg, run_dir, splits=make_splits())

    latest, info = restore_for_export(cfg, run_dir, which="latest")
    assert info["step"] == 12 and info["class_names"] == ["a", "b", "c"]
    assert weights_digest(latest) == result.weights_sha256

    best, info = restore_for_export(cfg, run_dir, which="best")
    assert info["step"] == result.best_step
    assert info["metric"] == "val_accuracy" and info["value"] == pytest.approx(result.best_value)
    out = best.predict(make_splits().x_test, verbose=0)
    assert out.shape == (24, 3) and np.isfinite(out).all()

    with pytest.raises(ConfigError, match="different model"):
        restore_for_export(make_cfg(model={"options": {"units": 4}}), run_dir)


def test_restore_for_export_without_training_says_to_train_first(tmp_path):
    with pytest.raises(ModelError, match="run `tfship train`"):
        restore_for_export(make_cfg(), RunDir(tmp_path))


def test_guard_is_ignored_until_a_checkpoint_exists(tmp_path):
    cfg = make_cfg()
    old = guard_record(cfg, data_fingerprint="x", input_shape=(8, 8, 1), class_names=("a", "b"))
    (tmp_path / "run.json").write_text(json.dumps(old))
    new = guard_record(cfg, data_fingerprint="y", input_shape=(8, 8, 1), class_names=("a", "b"))
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


def test_an_unknown_best_metric_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint\.best_metric='val_f1'"):
        small_keeper(make_cfg(checkpoint={"best_metric": "val_f1"}), RunDir(tmp_path))
