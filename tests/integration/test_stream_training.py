"""`data.stream` wired into the stages (issue 16): training reads the streamed split, a
resumed run sees exactly the batches an uninterrupted one does, and `tfship run` trains,
exports and evaluates on generated shards with the stream fingerprint recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import stream_shards
from tests.helpers.preempt import preempt_before_call
from tfship.config import PipelineConfig
from tfship.data import load_splits
from tfship.data.streamed import StreamSplits
from tfship.errors import DataError, ExitCode, Preempted
from tfship.rundir import RunDir
from tfship.train import run_train

BUILDER = "tests.integration.test_stream_training:small_model"


def small_model(spec: Any, units: int = 8) -> keras.Model:
    inputs = spec.inputs()
    h = keras.layers.Dense(units, activation="relu")(inputs["v"])
    return keras.Model(inputs, spec.head()(h))


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    stream_shards.write_tfrecords(folder, 8, 40)  # 320 examples, ids 0..319, y = id % 3
    return folder


def make_cfg(shards: Path, **data: Any) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "data": {
                "source": "tfrecord",
                "path": str(shards / "part-*.tfrecord"),
                "label": "y",
                "features": {"v": {"kind": "numeric", "shape": [3]}},
                "stream": {"hash_key": "id", "hash_key_dtype": "int64", "cycle_length": 4},
                "shuffle_buffer": 64,
                **data,
            },
            "model": {"builder": BUILDER},
            "train": {"epochs": 2, "per_replica_batch_size": 16, "progress": "none"},
            "checkpoint": {"every_steps": 4, "keep": 2},
        }
    )


def test_the_stream_splits_hold_validation_and_test_and_count_the_training_split(shards):
    splits = load_splits(make_cfg(shards))
    assert isinstance(splits, StreamSplits)
    n = splits.train_size + len(splits.y_val) + len(splits.y_test)
    assert n == 320 and splits.train_size > 200
    assert sum(splits.train_label_counts.values()) == splits.train_size
    assert splits.label_names == ("0", "1", "2")
    assert splits.x_val["v"].shape == (len(splits.y_val), 3)
    assert len(splits.files) == 8 and len(splits.fingerprint) == 64
    # The training sample (ModelSpec's) is the same on every load: export rebuilds from it.
    again = load_splits(make_cfg(shards))
    np.testing.assert_array_equal(splits.x_train["v"], again.x_train["v"])
    assert again.fingerprint == splits.fingerprint


def test_training_labels_are_encoded_by_the_task_in_the_graph_or_per_batch_alike(
    shards, monkeypatch
):
    splits = load_splits(make_cfg(shards))

    def labels() -> np.ndarray:
        ds = splits.train_dataset(None, global_batch=16, steps_per_epoch=4)
        return np.concatenate([y for _, y in ds.take(4).as_numpy_iterator()])

    table = labels()  # a lookup table from the counted label values
    monkeypatch.setattr(StreamSplits, "_label_table", lambda self: None)
    per_batch = labels()  # task.encode_labels in a numpy_function
    np.testing.assert_array_equal(table, per_batch)
    assert table.dtype == per_batch.dtype == splits.y_val.dtype


def test_explicit_split_locations_read_each_split_from_its_own_shards(tmp_path):
    for i, name in enumerate(("train", "validation", "test")):
        stream_shards.write_tfrecords(tmp_path / name, 2, 30, prefix=f"p{i}")
    locations = {s: str(tmp_path / s / "*.tfrecord") for s in ("train", "validation", "test")}
    cfg = make_cfg(tmp_path, path=None, stream={"locations": locations})
    splits = load_splits(cfg)
    assert (splits.train_size, len(splits.y_val), len(splits.y_test)) == (60, 60, 60)
    assert sorted({e.path.split("/")[0] for e in splits.files}) == ["test", "train", "validation"]
    assert set(splits.profiles) == {"train", "validation", "test"}


def test_more_eval_examples_than_the_bound_is_a_data_error_naming_the_setting(shards):
    cfg = make_cfg(shards)
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(
                update={"stream": cfg.data.stream.model_copy(update={"max_eval_examples": 5})}
            )
        }
    )
    with pytest.raises(DataError, match="more than 5 examples") as info:
        load_splits(cfg)
    assert info.value.exit_code == ExitCode.DATA
    assert "max_eval_examples" in str(info.value.hint)


def test_a_training_split_smaller_than_one_global_batch_is_a_data_error(shards):
    splits = load_splits(make_cfg(shards))
    with pytest.raises(DataError, match="fewer than one global batch"):
        splits.train_dataset(None, global_batch=splits.train_size + 1, steps_per_epoch=1)


def _recording(monkeypatch: pytest.MonkeyPatch, seen: list[str]) -> None:
    """Record a digest of every training batch the input pipeline produces, in order (the
    loop consumes one batch a step, so the first k recorded are the k trained)."""
    original = StreamSplits.train_dataset

    def record(v: Any) -> Any:
        seen.append(hashlib.sha256(v.numpy().tobytes()).hexdigest()[:16])
        return np.int64(0)

    def train_dataset(self: StreamSplits, ctx: Any, **kw: Any) -> Any:
        def tap(x: Any, y: Any) -> Any:
            done = tf.py_function(record, [x["v"]], tf.int64)
            with tf.control_dependencies([done]):
                return x, tf.identity(y)

        return original(self, ctx, **kw).map(tap)

    monkeypatch.setattr(StreamSplits, "train_dataset", train_dataset)


def test_a_resumed_run_trains_on_the_same_batches_as_an_uninterrupted_one(
    shards, tmp_path, monkeypatch
):
    cfg = make_cfg(shards)
    splits = load_splits(cfg)
    steps_per_epoch = splits.train_size // 16
    total = 2 * steps_per_epoch

    straight: list[str] = []
    with monkeypatch.context() as m:
        _recording(m, straight)
        whole = run_train(cfg, RunDir(tmp_path / "straight"), splits=splits)
    assert whole.steps == total

    # Calls end at steps 4, 8, 12, E, E+4 ... (checkpoints every 4, epoch ends): stopping
    # before the 5th call stops inside the second epoch, after crossing an epoch end.
    first: list[str] = []
    run_dir = RunDir(tmp_path / "resumed")
    with monkeypatch.context() as m:
        _recording(m, first)
        preempt_before_call(m, 4)
        with pytest.raises(Preempted) as stopped:
            run_train(cfg, run_dir, splits=load_splits(cfg))
    stop = int(str(stopped.value).split("at step ")[1].split()[0])
    assert steps_per_epoch < stop < total and stop % steps_per_epoch != 0
    second: list[str] = []
    with monkeypatch.context() as m:
        _recording(m, second)
        resumed = run_train(cfg, run_dir, splits=load_splits(cfg))
    assert resumed.resumed_from_step == stop and resumed.steps == total

    assert len(set(straight[:total])) == total  # every batch differs (epoch 2 is reshuffled)
    assert first[:stop] + second[: total - stop] == straight[:total]
    # The same batches, the same restored optimizer state: the same model, bit for bit.
    assert resumed.weights_sha256 == whole.weights_sha256


def test_tfship_run_trains_exports_and_evaluates_a_streamed_data_set(shards, tmp_path):
    import yaml

    from tfship import cli

    cfg = make_cfg(shards)
    raw = cfg.model_dump(mode="json", exclude_defaults=True)
    raw["train"]["epochs"] = 1
    raw["gate"] = {"absolute": {"accuracy": {"min": 0.0}}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    code = cli.main(
        [
            "run",
            "--config",
            str(tmp_path / "pipeline.yaml"),
            "--run-dir",
            str(run),
            "--set",
            f"serving.model_repository={tmp_path / 'models'}",
            "--skip",
            "scan",
        ]
    )
    assert code == ExitCode.OK
    data = json.loads((run / "data.json").read_text())
    splits = load_splits(cfg)
    assert data["fingerprint"] == splits.fingerprint
    assert data["sizes"]["train"] == splits.train_size
    assert data["stream"]["all"]["files"] == 8
    manifest = json.loads((run / "data.manifest.json").read_text())
    assert len(manifest["files"]) == 8
    assert (run / "data.stream.all.json").is_file()
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["data_fingerprint"] == splits.fingerprint
    export = [p for p in (run / "export").iterdir() if p.name.isdigit()]
    assert len(export) == 1
    data_manifest = export[0] / "assets.extra" / "tfship-data-manifest.json"
    assert json.loads(data_manifest.read_text())["fingerprint"] == splits.fingerprint


@pytest.mark.parametrize(("pipelines", "replicas"), [(1, 2), (3, 3)])
def test_each_input_pipeline_resumes_where_it_stopped_mirrored_and_multi_worker(
    shards, pipelines, replicas
):
    # Mirrored (1 pipeline, 2 replicas: 2 per-replica batches a step) and multi-worker (one
    # pipeline per worker, FILE sharding): a pipeline rebuilt at step s yields what the
    # uninterrupted pipeline yields after its first s steps, as long as the number of
    # pipelines and replicas is unchanged.
    splits = load_splits(make_cfg(shards))
    global_batch = 6 * replicas
    steps_per_epoch = splits.train_size // global_batch
    local = replicas // pipelines

    def digests(ctx: Any, start: int, steps: int) -> list[str]:
        ds = splits.train_dataset(
            ctx, global_batch=global_batch, steps_per_epoch=steps_per_epoch, start_step=start
        )
        return [
            hashlib.sha256(x["v"].tobytes()).hexdigest()[:16]
            for x, _ in ds.take(steps * local).as_numpy_iterator()
        ]

    total = steps_per_epoch + 3
    for index in range(pipelines):
        ctx = tf.distribute.InputContext(pipelines, index, replicas)
        whole = digests(ctx, 0, total)
        for stop in (2, steps_per_epoch + 1):
            assert digests(ctx, stop, total - stop) == whole[stop * local :], (index, stop)


def test_csv_and_parquet_shards_give_the_same_split_and_train_batches(tmp_path):
    stream_shards.write_csvs(tmp_path / "csv", 4, 40)
    stream_shards.write_parquets(tmp_path / "pq", 4, 40)
    feats = {"color": "categorical", "id": {"kind": "categorical", "dtype": "int64"}}
    seen = []
    for source, pattern in (("csv", "csv/*.csv"), ("parquet", "pq/*.parquet")):
        cfg = PipelineConfig.model_validate(
            {
                "data": {
                    "source": source,
                    "path": str(tmp_path / pattern),
                    "label": "y",
                    "features": feats,
                    "stream": {"hash_key": "id"},
                }
            }
        )
        splits = load_splits(cfg)
        ds = splits.train_dataset(None, global_batch=8, steps_per_epoch=4, start_step=1)
        assert [len(y) for _, y in ds.take(3).as_numpy_iterator()] == [8, 8, 8]
        seen.append((splits.train_size, sorted(splits.x_val["id"].tolist())))
    assert seen[0] == seen[1]  # the hash split puts each example in the same split
