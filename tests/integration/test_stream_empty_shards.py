"""A worker must never be left without training data under MultiWorkerMirroredStrategy: FILE
sharding deals out the non-empty shards (0-record shards no longer leave a worker empty and
hang the collective), and a pipeline whose share still holds no example of its split is a
DataError naming it before any step, not a hang."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import stream_shards as ss
from tests.helpers.workers import start_python_workers
from tfship.config import PipelineConfig
from tfship.data import load_splits
from tfship.data.stream import HashSplit, StreamSource
from tfship.errors import DataError, ExitCode

REPO = Path(__file__).resolve().parents[2]


def with_empty_shards(folder: Path, files: int, empty: set[int], per_file: int = 20) -> None:
    """`files` TFRecord shards of `per_file` examples, those in `empty` truncated to 0 bytes
    (a valid shard of no records)."""
    for k, p in enumerate(ss.write_tfrecords(folder, files, per_file)):
        if k in empty:
            p.write_bytes(b"")


def ids_of(src: StreamSource, ctx: Any) -> list[int]:
    ds = src.dataset(8, input_context=ctx, epoch=0)
    return [int(i) for x, _ in ds.as_numpy_iterator() for i in x["id"]]


def ctx(index: int, pipelines: int = 2) -> Any:
    return tf.distribute.InputContext(pipelines, index, pipelines)


def test_zero_record_shards_are_dealt_apart_so_every_worker_reads_data(tmp_path):
    # Shards 1 and 3 are empty: dealing every 2nd file gave worker 1 only those two.
    with_empty_shards(tmp_path, 4, {1, 3})
    src = StreamSource.open(str(tmp_path), ss.schema())
    got = [ids_of(src, ctx(i)) for i in range(2)]
    assert src.last_decision is not None and src.last_decision.policy == "FILE"
    assert all(got) and not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == list(range(0, 20)) + list(range(40, 60))


def test_fewer_non_empty_shards_than_workers_falls_back_to_data_sharding(tmp_path):
    with_empty_shards(tmp_path, 3, {0, 2})  # 3 files, 1 with records, 2 workers
    src = StreamSource.open(str(tmp_path), ss.schema())
    got = [ids_of(src, ctx(i)) for i in range(2)]
    assert src.last_decision is not None and src.last_decision.policy == "DATA"
    assert all(got) and sorted(got[0] + got[1]) == list(range(20, 40))


def _write(path: Path, ids: np.ndarray) -> None:
    r = ss.rows(0, int(ids.max()) + 1, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in ids.tolist():
            w.write(ss.example(r, i))


def test_a_worker_whose_shards_hold_no_training_example_is_a_data_error_not_a_hang(tmp_path):
    hs = HashSplit("id", 0.15, 0.15, key_dtype="int64")
    ids = np.arange(600)
    split = {s: ids[hs.mask(tf.constant(ids), s).numpy()] for s in ("train", "validation")}
    split["test"] = ids[hs.mask(tf.constant(ids), "test").numpy()]
    # Shard 0: training examples only; shard 1: validation and test only.
    _write(tmp_path / "part-00000.tfrecord", split["train"][:40])
    _write(tmp_path / "part-00001.tfrecord", np.sort(np.r_[split["validation"], split["test"]]))
    cfg = PipelineConfig.model_validate(
        {
            "data": {
                "source": "tfrecord",
                "path": str(tmp_path / "part-*.tfrecord"),
                "label": "y",
                "features": {"v": {"kind": "numeric", "shape": [3]}},
                "stream": {"hash_key": "id", "hash_key_dtype": "int64"},
                "validation_fraction": 0.15,
                "test_fraction": 0.15,
            },
            "train": {"per_replica_batch_size": 4},
        }
    )
    splits = load_splits(cfg)
    assert splits.train_size == 40
    first = splits.train_dataset(ctx(0), global_batch=8, steps_per_epoch=5)
    assert len(list(first.take(2))) == 2
    with pytest.raises(DataError, match=r"input pipeline 1 of 2 .* no training examples") as info:
        splits.train_dataset(ctx(1), global_batch=8, steps_per_epoch=5)
    assert info.value.exit_code == ExitCode.DATA
    assert "1 of 2 file(s), FILE sharding" in str(info.value)
    assert "fewer workers" in str(info.value.hint)


WORKER = """
import json, sys
import tensorflow as tf
sys.path.insert(0, {repo!r})
strategy = tf.distribute.MultiWorkerMirroredStrategy()
from tfship.config import PipelineConfig
from tfship.data import load_splits

cfg = PipelineConfig.model_validate(json.loads({cfg!r}))
splits = load_splits(cfg)
E = splits.train_size // 8
dist = strategy.distribute_datasets_from_function(
    lambda ctx: splits.train_dataset(ctx, global_batch=8, steps_per_epoch=E)
)
it = iter(dist)

@tf.function
def step(batch):
    x, y = batch
    per = strategy.run(lambda y: tf.shape(y)[0], args=(y,))
    return strategy.reduce("SUM", per, axis=None), x["id"]

totals, ids = [], []
for _ in range(2 * E):
    total, local = step(next(it))
    totals.append(int(total))
    ids += [int(i) for part in strategy.experimental_local_results(local) for i in part.numpy()]
print("RESULT " + json.dumps({{"totals": totals, "ids": ids, "E": E}}))
"""


@pytest.mark.slow
def test_two_workers_train_through_zero_record_shards_without_hanging(tmp_path: Path) -> None:
    with_empty_shards(tmp_path / "train", 4, {1, 3})
    ss.write_tfrecords(tmp_path / "validation", 1, 12, prefix="v")
    ss.write_tfrecords(tmp_path / "test", 1, 12, prefix="t")
    locations = {s: str(tmp_path / s) for s in ("train", "validation", "test")}
    cfg = {
        "data": {
            "source": "tfrecord",
            "label": "y",
            "features": {"id": {"kind": "categorical", "dtype": "int64"}},
            "stream": {"locations": locations},
        },
    }
    procs = start_python_workers(WORKER.format(repo=str(REPO), cfg=json.dumps(cfg)))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-3000:]
            line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
            results.append(json.loads(line[len("RESULT ") :]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    e = results[0]["E"]
    assert e == 40 // 8
    for r in results:
        assert r["totals"] == [8] * (2 * e)  # every step a full global batch of 8
    first_epoch = [set(r["ids"][: 4 * e]) for r in results]
    assert not first_epoch[0] & first_epoch[1]
    assert first_epoch[0] | first_epoch[1] == set(range(0, 20)) | set(range(40, 60))
