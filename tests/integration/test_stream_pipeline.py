"""The streaming pipeline on generated shards (small, many files): every format, file order,
hash split, FILE/DATA sharding per input pipeline, bad input, fingerprint and statistics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import stream_shards as ss
from tfship.data.stream import (
    HashSplit,
    SplitLocations,
    StreamOptions,
    StreamSource,
    compare_statistics,
    profile,
)
from tfship.errors import DataError, ExitCode

FILES, PER_FILE = 6, 40
N = FILES * PER_FILE


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    ss.write_tfrecords(root / "tf", FILES, PER_FILE)
    ss.write_tfrecords(root / "gz", 3, 20, gzip_=True)
    ss.write_csvs(root / "csv", 3, 30)
    ss.write_parquets(root / "pq", 3, 30)
    return root


def _ids(ds) -> list[int]:
    return [int(i) for x, _ in ds for i in x["id"].numpy()]


class _Ctx:
    """A tf.distribute.InputContext stand-in: `num_input_pipelines` workers, one replica each."""

    def __init__(self, n: int, i: int) -> None:
        import tensorflow as tf

        self._ctx = tf.distribute.InputContext(n, i, n)

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)


def test_tfrecord_reads_every_example_once_in_a_seeded_order(shards: Path) -> None:
    src = StreamSource.open(str(shards / "tf"), ss.schema(), StreamOptions(seed=3, cycle_length=4))
    first = _ids(src.dataset(32))
    assert sorted(first) == list(range(N))
    assert _ids(src.dataset(32)) == first  # same seed, same order
    other = StreamSource.open(str(shards / "tf"), ss.schema(), StreamOptions(seed=4))
    assert _ids(other.dataset(32)) != first
    x, y = next(iter(src.dataset(8)))
    assert x["v"].shape == (8, 3) and x["x"].dtype.name == "float32"
    assert (y.numpy() == x["id"].numpy() % 3).all()
    # Two epochs: every example twice, the second epoch in another file order.
    two = _ids(src.dataset(32, epochs=2))
    assert sorted(two) == sorted(list(range(N)) * 2)


def test_missing_numeric_is_nan(shards: Path) -> None:
    src = StreamSource.open(str(shards / "tf"), ss.schema(), StreamOptions(shuffle_files=False))
    xs = np.concatenate([x["x"].numpy() for x, _ in src.dataset(64)])
    expected = np.concatenate([ss.rows(k * PER_FILE, PER_FILE, 0)["x"] for k in range(FILES)])
    ids = np.concatenate([x["id"].numpy() for x, _ in src.dataset(64)])
    np.testing.assert_array_equal(np.isnan(xs), np.isnan(expected[ids]))


@pytest.mark.parametrize(
    ("sub", "schema", "n"),
    [("gz", ss.schema, 60), ("csv", ss.scalar_schema, 90), ("pq", ss.schema, 90)],
)
def test_gzip_csv_parquet(shards: Path, sub: str, schema, n: int) -> None:
    src = StreamSource.open(str(shards / sub), schema())
    ids = _ids(src.dataset(16))
    assert sorted(ids) == list(range(n))
    x, y = next(iter(src.dataset(16)))
    assert set(x) == set(schema().names)
    assert (y.numpy() == x["id"].numpy() % 3).all()


def test_gfile_path_reads_like_local(shards: Path) -> None:
    src = StreamSource.open(f"file://{shards}/tf/part-*.tfrecord", ss.schema())
    assert sorted(_ids(src.dataset(64))) == list(range(N))


def test_hash_split_is_deterministic_and_disjoint(shards: Path) -> None:
    hs = HashSplit("id", validation_fraction=0.2, test_fraction=0.2)
    got = {}
    for seed, cycle in ((0, 2), (7, 16)):
        src = StreamSource.open(
            str(shards / "tf"),
            ss.schema(),
            StreamOptions(hash_split=hs, seed=seed, cycle_length=cycle),
        )
        got[seed] = {
            s: sorted(_ids(src.dataset(16, split=s))) for s in ("train", "validation", "test")
        }
    assert got[0] == got[7]  # order and parallelism do not move examples
    parts = got[0]
    assert sorted(parts["train"] + parts["validation"] + parts["test"]) == list(range(N))
    assert 0.1 < len(parts["test"]) / N < 0.3
    # Full batches after the split (rebatched), except the last.
    src = StreamSource.open(str(shards / "tf"), ss.schema(), StreamOptions(hash_split=hs))
    sizes = [len(y) for _, y in src.dataset(16, split="train")]
    assert set(sizes[:-1]) == {16}
    # on_error: skip parses per record, then splits: the same examples, full batches.
    skip = StreamSource.open(
        str(shards / "tf"), ss.schema(), StreamOptions(hash_split=hs, on_error="skip")
    )
    assert sorted(_ids(skip.dataset(16, split="test"))) == parts["test"]
    assert set(len(y) for _, y in skip.dataset(16, split="train")) - {16} <= {
        len(parts["train"]) % 16
    }
    # The same split from CSV shards by the same key: same ids.
    csv = StreamSource.open(str(shards / "csv"), ss.scalar_schema(), StreamOptions(hash_split=hs))
    tf_src = StreamSource.open(str(shards / "tf"), ss.schema(), StreamOptions(hash_split=hs))
    csv_test = set(_ids(csv.dataset(16, split="test")))
    assert csv_test == {i for i in _ids(tf_src.dataset(16, split="test")) if i < 90}


def test_explicit_split_locations(shards: Path) -> None:
    opts = StreamOptions(
        split_locations=SplitLocations(train=str(shards / "tf"), validation=str(shards / "gz"))
    )
    assert len(StreamSource.open("unused", ss.schema(), opts, split="validation").shards) == 3
    with pytest.raises(DataError, match="'test' split"):
        StreamSource.open("unused", ss.schema(), opts, split="test")


def test_file_sharding_per_input_pipeline(shards: Path) -> None:
    src = StreamSource.open(str(shards / "tf"), ss.schema())
    parts = [_ids(src.dataset(8, input_context=_Ctx(2, i))) for i in range(2)]
    assert src.last_decision is not None and src.last_decision.policy == "FILE"
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(N))
    # each pipeline read whole files (FILE): its ids are whole 40-id blocks
    assert {i // PER_FILE for i in parts[0]} & {i // PER_FILE for i in parts[1]} == set()
    x, _ = next(iter(src.dataset(8, input_context=_Ctx(2, 0))))
    assert len(x["id"]) == 4  # per-replica batch = global 8 / 2 replicas


def test_data_sharding_when_too_few_files(shards: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = StreamSource.open(str(shards / "gz"), ss.schema())  # 3 files
    with caplog.at_level(logging.WARNING):
        parts = [_ids(src.dataset(8, input_context=_Ctx(4, i))) for i in range(4)]
    assert src.last_decision.policy == "DATA"
    assert "only 3 file(s) for 4 input pipelines" in caplog.text
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(60))


@pytest.fixture()
def bad(tmp_path: Path) -> Path:
    paths = ss.write_tfrecords(tmp_path, 4, 30)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 9])  # truncated: the last record is cut
    return paths[2]


def test_corrupt_shard_fails_naming_it(bad: Path) -> None:
    src = StreamSource.open(str(bad.parent), ss.schema())
    with pytest.raises(DataError) as err, src.named_errors():
        _ids(src.dataset(16))
    assert err.value.exit_code == ExitCode.DATA
    assert bad.name in str(err.value) and "corrupt" in str(err.value)


def test_unparsable_records_fail_or_skip(tmp_path: Path) -> None:
    import tensorflow as tf

    ss.write_tfrecords(tmp_path, 3, 20)
    odd = tmp_path / "part-00009.tfrecord"
    with tf.io.TFRecordWriter(str(odd)) as w:
        r = ss.rows(1000, 5, 0)
        for i in range(5):
            w.write(ss.example(r, i))
        w.write(b"not an example")
        ex = tf.train.Example.FromString(ss.example(r, 0))
        ex.features.feature["x"].Clear()
        ex.features.feature["x"].bytes_list.value.append(b"text, not a number")
        w.write(ex.SerializeToString())
    src = StreamSource.open(str(tmp_path), ss.schema())
    with pytest.raises(DataError) as err, src.named_errors():
        _ids(src.dataset(16))
    assert odd.name in str(err.value) and "do not parse" in str(err.value)

    skip = StreamSource.open(
        str(tmp_path), ss.schema(), StreamOptions(on_error="skip", max_bad_records=2)
    )
    ids = _ids(skip.dataset(16))
    assert len(ids) == 65 and skip.check_skipped() == 2
    strict = StreamSource.open(
        str(tmp_path), ss.schema(), StreamOptions(on_error="skip", max_bad_records=1)
    )
    _ids(strict.dataset(16))
    with pytest.raises(DataError, match="at most 1 allowed"):
        strict.check_skipped()


def test_too_many_bad_records_stop_the_pipeline(tmp_path: Path) -> None:
    import tensorflow as tf

    ss.write_tfrecords(tmp_path, 1, 10)
    with tf.io.TFRecordWriter(str(tmp_path / "part-00001.tfrecord")) as w:
        for _ in range(20):
            w.write(b"garbage")
    ss.write_tfrecords(tmp_path, 1, 10, prefix="z")
    src = StreamSource.open(
        str(tmp_path),
        ss.schema(),
        StreamOptions(on_error="skip", max_bad_records=0, cycle_length=1, shuffle_files=False),
    )
    with pytest.raises(DataError, match="more than 0 bad record"), src.named_errors():
        _ids(src.dataset(4))


def test_profile_fingerprint_and_drift(tmp_path: Path) -> None:
    import tensorflow as tf

    ss.write_tfrecords(tmp_path / "ref", 8, 50)
    ss.write_tfrecords(tmp_path / "new", 8, 50, shift=1.5, new_colors=True)
    ref_src = StreamSource.open(str(tmp_path / "ref"), ss.schema())
    a = profile(ref_src, sample_files=4, sample_records=120)
    b = profile(ref_src, sample_files=4, sample_records=120)
    assert a.fingerprint == b.fingerprint and a.records == 120
    assert len(a.sampled) == 4 and a.statistics["sample"]["of_files"] == 8
    a.write(tmp_path / "profile.json")

    # Same size, other bytes, in a sampled shard: the content sample sees it.
    victim = tmp_path / "ref" / a.sampled[0]
    k = int(victim.stem.split("-")[1])
    rows = ss.rows(k * 50, 50, 0)
    rows["color"][0] = {"red": "rex"}.get(rows["color"][0], rows["color"][0][:-1] + "q")
    size = victim.stat().st_size
    with tf.io.TFRecordWriter(str(victim)) as w:
        for i in range(50):
            w.write(ss.example(rows, i))
    assert victim.stat().st_size == size
    changed = profile(
        StreamSource.open(str(tmp_path / "ref"), ss.schema()), sample_files=4, sample_records=120
    )
    assert changed.fingerprint != a.fingerprint
    assert changed.shards[0].size == a.shards[0].size

    new = profile(
        StreamSource.open(str(tmp_path / "new"), ss.schema()), sample_files=4, sample_records=120
    )
    cmp = compare_statistics(new.statistics, a.statistics)
    assert not cmp.violations
    drifted = {(f.feature, f.check) for f in cmp.drift}
    assert ("x", "mean_shift") in drifted and ("color", "unseen_rate") in drifted
