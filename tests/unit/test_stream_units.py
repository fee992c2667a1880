"""tfship.data.stream without reading data: locations, listing, sharding decision, hash split,
statistics accumulation and drift comparison."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import stream_shards
from tfship.data.stream import (
    DriftBounds,
    HashSplit,
    StatsAccumulator,
    compare_statistics,
    decide,
    list_location,
    parse_location,
)
from tfship.data.stream.readers import detect_format
from tfship.errors import DataError, ExitCode


@pytest.mark.parametrize(
    ("raw", "scheme", "bucket", "root", "pattern"),
    [
        ("data/shards", "local", None, "data/shards", None),
        ("data/train-*.tfrecord", "local", None, "data/", "train-*.tfrecord"),
        ("s3://bkt/p/x-*.gz", "s3", "bkt", "p/", "x-*.gz"),
        ("gs://bkt/d/", "gs", "bkt", "d/", None),
        ("file:///tmp/a/*.csv", "file", None, "/tmp/a/", "*.csv"),
    ],
)
def test_parse_location(raw: str, scheme: str, bucket: str | None, root: str, pattern: str | None):
    loc = parse_location(raw)
    assert (loc.scheme, loc.bucket, loc.root, loc.pattern) == (scheme, bucket, root, pattern)
    assert loc.needs_staging == (scheme == "s3")


def _touch(p: Path, n: int = 3) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x" * n)


def test_list_local_dir_glob_and_hidden(tmp_path: Path) -> None:
    for name in ("a-0.tfrecord", "a-1.tfrecord", "sub/a-2.tfrecord", "_SUCCESS", ".crc"):
        _touch(tmp_path / name)
    every = list_location(tmp_path)
    assert [s.rel for s in every] == ["a-0.tfrecord", "a-1.tfrecord", "sub/a-2.tfrecord"]
    assert all(s.size == 3 and s.checksum is None and s.version for s in every)
    top = list_location(f"{tmp_path}/a-*.tfrecord")
    assert [s.rel for s in top] == ["a-0.tfrecord", "a-1.tfrecord"]  # * stays in its folder
    deep = list_location(f"{tmp_path}/**.tfrecord")
    assert len(deep) == 3


def test_list_through_gfile(tmp_path: Path) -> None:
    """The gs:// code path (tf.io.gfile), run on TF's local filesystem via file://."""
    _touch(tmp_path / "p-0.csv", 5)
    _touch(tmp_path / "p-1.csv", 7)
    _touch(tmp_path / "other.txt")
    shards = list_location(f"file://{tmp_path}/p-*.csv")
    assert [(s.rel, s.size) for s in shards] == [("p-0.csv", 5), ("p-1.csv", 7)]
    assert shards[0].path == f"file://{tmp_path}/p-0.csv"
    assert len(list_location(f"file://{tmp_path}")) == 3


@pytest.mark.parametrize("suffix", ["/nothing-*.tfrecord", "/missing-dir"])
def test_empty_or_missing_location_is_a_data_error(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(DataError) as err:
        list_location(f"{tmp_path}{suffix}")
    assert err.value.exit_code == ExitCode.DATA
    assert str(tmp_path) in str(err.value)


def test_empty_gfile_glob_names_the_location(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="glob matches no files"):
        list_location(f"file://{tmp_path}/x-*.tfrecord")


def test_diff_listings() -> None:
    from tfship.data.stream import Shard
    from tfship.data.stream.profile import diff_listings, listing_digest

    old = [
        Shard("/d/a", "a", 3, None, "1"),
        Shard("/d/b", "b", 3, None, "1"),
        Shard("/d/c", "c", 3, None, "1"),
    ]
    new = [
        Shard("/d/a", "a", 3, None, "1"),
        Shard("/d/b", "b", 3, None, "2"),
        Shard("/d/d", "d", 3, None, "1"),
    ]
    assert diff_listings(old, new) == (("d",), ("c",), ("b",))
    s3_old = [Shard("s3://x/a", "a", 3, "e1", "t1")]
    assert diff_listings(s3_old, [Shard("s3://x/a", "a", 3, "e1", "t2")]) == ((), (), ())
    assert diff_listings(s3_old, [Shard("s3://x/a", "a", 3, "e2", "t1")])[2] == ("a",)
    # The fingerprint's listing part ignores versions (a copy keeps it) and the order.
    assert listing_digest(old) == listing_digest([*reversed(old[:2]), old[2]])
    assert listing_digest(old[:2]) != listing_digest(old)


def test_detect_format() -> None:
    assert detect_format(["a.tfrecord", "b.tfrecord"]) == ("tfrecord", None)
    assert detect_format(["a.csv.gz"]) == ("csv", "GZIP")
    assert detect_format(["a.parquet"]) == ("parquet", None)
    with pytest.raises(DataError, match="format"):
        detect_format(["a.csv", "b.tfrecord"])
    assert detect_format(["a.bin"], "tfrecord") == ("tfrecord", None)


def test_shard_policy_decision(caplog: pytest.LogCaptureFixture) -> None:
    assert decide(10, 1).policy == "OFF"
    assert decide(4, 4).policy == "FILE"
    assert decide(100, 8).policy == "FILE"
    with caplog.at_level(logging.WARNING):
        d = decide(3, 4)
    assert d.policy == "DATA"
    assert "only 3 file(s) for 4 input pipelines" in d.reason
    assert "4x the I/O" in caplog.text
    import tensorflow as tf

    assert d.tf_policy() == tf.data.experimental.AutoShardPolicy.DATA


def test_hash_split_is_stable_and_partitions() -> None:
    # Pinned FarmHash Fingerprint64 buckets: a TF upgrade that changed them would move examples
    # between splits, so it must fail here first.
    import tensorflow as tf

    assert tf.strings.to_hash_bucket_fast(["a", "b", "key-1"], 1000).numpy().tolist() == [
        939,
        822,
        866,
    ]
    hs = HashSplit("id", validation_fraction=0.2, test_fraction=0.1, buckets=1000)
    assert hs.ranges() == {"train": (0, 700), "validation": (700, 900), "test": (900, 1000)}
    ids = np.arange(5000, dtype=np.int64)
    masks = {s: hs.mask(ids, s).numpy() for s in ("train", "validation", "test")}
    total = sum(m.astype(int) for m in masks.values())
    assert (total == 1).all()
    assert abs(masks["train"].mean() - 0.7) < 0.03
    # int64 keys hash as their decimal text
    assert (hs.mask(ids, "test").numpy() == hs.mask([str(i) for i in ids], "test").numpy()).all()
    with pytest.raises(DataError):
        HashSplit("id", validation_fraction=0.6, test_fraction=0.5)


def test_stats_accumulate_across_batches() -> None:
    schema = stream_shards.schema()
    r = stream_shards.rows(0, 1000, seed=1)
    acc = StatsAccumulator(schema, "int64", top_k=3)
    for lo in range(0, 1000, 128):
        sl = slice(lo, lo + 128)
        acc.update(
            {
                "id": r["id"][sl],
                "x": r["x"][sl],
                "v": r["v"][sl],
                "color": np.array([c.encode() for c in r["color"][sl]], object),
                "note": np.array([n.encode() for n in r["note"][sl]], object),
            },
            r["y"][sl],
        )
    s = acc.to_json()
    x = s["features"]["x"]
    vals = r["x"][~np.isnan(r["x"])].astype(np.float64)
    assert x["missing"] == int(np.isnan(r["x"]).sum()) and x["count"] == 1000
    assert math.isclose(x["mean"], vals.mean(), rel_tol=1e-9)
    assert math.isclose(x["std"], vals.std(), rel_tol=1e-9)
    assert x["min"] == pytest.approx(vals.min()) and x["max"] == pytest.approx(vals.max())
    assert s["features"]["v"]["count"] == 1000
    color = s["features"]["color"]
    assert [v for v, _ in color["top"]] == ["red", "green", "blue"]
    assert color["other"] + sum(c for _, c in color["top"]) == 1000
    assert s["features"]["note"]["type"] == "text"
    assert s["label"]["top"][0][1] in (333, 334)
    assert s["examples"] == 1000


def _stats(shift: float = 0.0, new_colors: bool = False) -> dict:
    schema = stream_shards.scalar_schema()
    r = stream_shards.rows(0, 4000, seed=2, shift=shift, new_colors=new_colors)
    acc = StatsAccumulator(schema)
    acc.update(
        {n: (r[n] if r[n].dtype.kind in "if" else r[n].astype(object)) for n in schema.names},
        r["y"],
    )
    return acc.to_json()


def test_drift_on_a_shifted_data_set() -> None:
    ref = _stats()
    same = compare_statistics(_stats(), ref)
    assert not same.violations and not same.drift
    shifted = compare_statistics(_stats(shift=1.0, new_colors=True), ref, DriftBounds())
    checks = {(f.feature, f.check) for f in shifted.drift}
    assert ("x", "mean_shift") in checks
    assert ("color", "linf") in checks and ("color", "unseen_rate") in checks
    assert ("x", "std_ratio") not in checks
    linf = next(f for f in shifted.measured if (f.feature, f.check) == ("color", "linf"))
    assert linf.value == pytest.approx(0.3, abs=0.05)  # red 0.4 -> 0.1
    with pytest.raises(DataError, match="drift"):
        shifted.raise_for_drift()
    loose = compare_statistics(_stats(shift=1.0), ref, DriftBounds(mean_shift=2.0))
    assert not loose.drift


def test_schema_violations_are_exit_4() -> None:
    ref = _stats()
    cur = _stats()
    del cur["features"]["color"]
    cur["features"]["x"] = {**cur["features"]["x"], "missing": cur["features"]["x"]["count"]}
    cur["features"]["note"] = {**cur["features"]["note"], "type": "categorical"}
    result = compare_statistics(cur, ref)
    assert {f.check for f in result.violations} == {"missing_feature", "all_missing", "type"}
    with pytest.raises(DataError) as err:
        result.raise_for_violations()
    assert err.value.exit_code == ExitCode.DATA and "'color'" in str(err.value)
