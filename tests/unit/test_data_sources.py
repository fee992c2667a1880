"""Each data source round-trips tiny generated data into the same normal form and schema."""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from tfship.config import load_config
from tfship.data import load_splits
from tfship.data.loaders import load
from tfship.data.schema import Feature, Kind
from tfship.errors import DataError

N = 30
CITIES = ("Oslo", "Rome", "Lima")


def cfg_for(source: str, path: Path | None = None, *sets: str):
    base = [f"data.source={source}"] + ([f"data.path={path}"] if path else [])
    return load_config(None, env={}, overrides=[*base, *sets])


def all_rows(s, name: str) -> np.ndarray:
    return np.concatenate([s.x_train[name], s.x_val[name], s.x_test[name]])


def write_csv(path: Path) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["age", "city", "review", "zip", "label"])
        for i in range(N):
            age = "" if i == 0 else ("NA" if i == 1 else str(20 + i))
            city = "" if i == 2 else CITIES[i % 3]
            w.writerow(
                [age, city, f"stay number {i} was fine", f"{i:05d}", "yes" if i % 2 else "no"]
            )
    return path


def test_a_csv_is_a_table_of_typed_columns_with_missing_cells(tmp_path: Path, caplog) -> None:
    path = write_csv(tmp_path / "d.csv")
    with caplog.at_level(logging.INFO, logger="tfship.data"):
        s = load_splits(cfg_for("csv", path))
    assert "inferred schema (pin it in data.features):" in caplog.text
    assert s.schema.features == (
        Feature("age", Kind.NUMERIC, "float32"),
        Feature("city", Kind.CATEGORICAL, "string"),
        Feature("review", Kind.TEXT, "string"),
        Feature("zip", Kind.NUMERIC, "float32"),  # all cells are numbers
    )
    assert s.label_names == ("no", "yes") and s.input_shape is None
    assert int(np.isnan(all_rows(s, "age")).sum()) == 2  # "" and "NA"
    assert sorted(set(all_rows(s, "city").tolist())) == ["", "Lima", "Oslo", "Rome"]
    # The fingerprint is the file's manifest entry: the same bytes give the same fingerprint.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = f"d.csv\t{path.stat().st_size}\t{digest}".encode()
    assert s.fingerprint == hashlib.sha256(entry).hexdigest()


def test_csv_columns_declared_as_strings_keep_their_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv")
    s = load_splits(cfg_for("csv", path, "data.features={zip: categorical, age: numeric}"))
    assert s.schema.names == ("zip", "age")  # city and review are dropped
    assert "00007" in all_rows(s, "zip").tolist()


@pytest.mark.parametrize("source", ["csv", "parquet"])
def test_a_table_larger_than_the_memory_bound_is_refused(source, tmp_path, monkeypatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    import tfship.data.loaders as loaders

    rows = 5000
    pq.write_table(
        pa.table({"a": list(range(rows)), "label": [i % 2 for i in range(rows)]}),
        tmp_path / "d.parquet",
    )
    (tmp_path / "d.csv").write_text("a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(rows)))
    monkeypatch.setattr(loaders, "MAX_DATA_BYTES", 40_000)
    with pytest.raises(DataError, match=r"take about \d+ bytes in memory; expected at most 40000"):
        load(cfg_for(source, tmp_path / f"d.{source}").data)


def test_a_parquet_file_keeps_its_types_nulls_and_vector_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "count": pa.array(list(range(N)), pa.int32()),
            "score": pa.array([None if i == 3 else i / 2 for i in range(N)], pa.float64()),
            "city": pa.array([None if i == 4 else CITIES[i % 3] for i in range(N)]),
            "embedding": pa.array([[float(i), 1.0] for i in range(N)], pa.list_(pa.float32())),
            "label": pa.array([float(i) * 1.5 for i in range(N)]),
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    s = load_splits(cfg_for("parquet", tmp_path / "d.parquet", "task.type=regression"))
    assert {f.name: (f.kind, f.shape) for f in s.schema.features} == {
        "count": (Kind.NUMERIC, ()),
        "score": (Kind.NUMERIC, ()),
        "city": (Kind.CATEGORICAL, ()),
        "embedding": (Kind.NUMERIC, (2,)),
    }
    assert int(np.isnan(all_rows(s, "score")).sum()) == 1
    assert "" in all_rows(s, "city").tolist()
    assert s.label_names == ("target",) and s.y_train.dtype == np.float32
    # Features and labels stay paired through the split.
    np.testing.assert_allclose(s.y_train[:, 0], s.x_train["embedding"][:, 0] * 1.5)


def test_a_text_folder_gives_a_text_feature_labelled_by_folder(tmp_path: Path) -> None:
    for c in ("neg", "pos"):
        (tmp_path / "t" / c).mkdir(parents=True)
        for i in range(12):
            (tmp_path / "t" / c / f"{i}.txt").write_text(f"{c} review number {i} ok", "utf-8")
    s = load_splits(cfg_for("text_folder", tmp_path / "t"))
    assert s.schema.features == (Feature("text", Kind.TEXT, "string"),)
    assert s.label_names == ("neg", "pos") and len(s.files) == 24
    for text, y in zip(s.x_train["text"], s.y_train, strict=True):
        assert text.startswith(s.label_names[y])


def test_a_text_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    for c in ("neg", "pos"):
        (tmp_path / "t" / c).mkdir(parents=True)
        (tmp_path / "t" / c / "a.txt").write_text("fine", "utf-8")
    (tmp_path / "t" / "pos" / "b.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match=r"text file .*b\.txt is not UTF-8: byte 0xe9"):
        load(cfg_for("text_folder", tmp_path / "t").data)


def example(**feats) -> bytes:
    import tensorflow as tf

    def feature(v):
        if isinstance(v, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
        if isinstance(v, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(v)))

    return tf.train.Example(
        features=tf.train.Features(feature={k: feature(v) for k, v in feats.items()})
    ).SerializeToString()


def write_records(path: Path, records: list[bytes]) -> Path:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r)
    return path


FEATURES = (
    "data.features={age: numeric, city: categorical, "
    "store: {kind: categorical, dtype: int64}, note: text, "
    "img: {kind: image, shape: [2, 2, 1]}}"
)


def good_record(i: int) -> dict:
    rec = {
        "age": [float(i)],
        "city": CITIES[i % 3].encode(),
        "store": i % 4,
        "note": f"note {i}".encode(),
        "img": [float(i)] * 4,
        "label": i % 2,
    }
    if i == 5:
        del rec["age"]  # missing numeric -> NaN
    return rec


def test_tfrecord_examples_are_parsed_per_declared_feature(tmp_path: Path) -> None:
    path = write_records(
        tmp_path / "r" / "a.tfrecord", [example(**good_record(i)) for i in range(N)]
    )
    s = load_splits(cfg_for("tfrecord", path.parent, FEATURES))
    kinds = {f.name: (f.kind, f.dtype, f.shape) for f in s.schema.features}
    assert kinds == {
        "age": (Kind.NUMERIC, "float32", ()),
        "city": (Kind.CATEGORICAL, "string", ()),
        "store": (Kind.CATEGORICAL, "int64", ()),
        "note": (Kind.TEXT, "string", ()),
        "img": (Kind.IMAGE, "float32", (2, 2, 1)),
    }
    ages = all_rows(s, "age")
    assert int(np.isnan(ages).sum()) == 1
    # Every row's features came from the same record: img holds age's value.
    present = ~np.isnan(ages)
    np.testing.assert_array_equal(all_rows(s, "img")[present, 0, 0, 0], ages[present])
    assert set(all_rows(s, "store").tolist()) == {0, 1, 2, 3}


def test_a_tfrecord_feature_of_the_wrong_type_names_record_file_and_feature(tmp_path) -> None:
    bad = good_record(7)
    bad["age"] = b"old"
    records = [example(**good_record(i)) for i in range(N)]
    records[7] = example(**bad)
    path = write_records(tmp_path / "r" / "a.tfrecord", records)
    with pytest.raises(DataError) as err:
        load_splits(cfg_for("tfrecord", path.parent, FEATURES))
    assert f"{path} record 7: feature 'age' holds a bytes_list; expected float_list or " in str(
        err.value
    )
    assert err.value.exit_code == 4


def test_an_npz_of_named_arrays_gives_those_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        height=rng.normal(size=N),
        color=np.array(["red", "blue", "green"] * 10),
        target=np.arange(N) % 3,
    )
    s = load_splits(cfg_for("npz", tmp_path / "d.npz", "data.label=target"))
    assert s.schema.names == ("height", "color")
    assert s.schema["color"].kind is Kind.CATEGORICAL
    assert s.label_names == ("0", "1", "2")


LOADER_MODULE = """
import numpy as np

def load(data_cfg):
    n = 30
    return (
        {"x": np.arange(n, dtype=np.float32), "tag": np.array(["a", "b", "c"] * 10)},
        ["a|b" if i % 2 else "c" for i in range(n)],
        {"x": "numeric", "tag": "categorical"},
    )

def broken(data_cfg):
    return {"x": [1, 2, 3]}, [0, 1]

def fails(data_cfg):
    raise KeyError("no such table")
"""


@pytest.fixture
def loader_module(tmp_path: Path, monkeypatch) -> str:
    (tmp_path / "my_loader.py").write_text(LOADER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_loader"


def test_a_loader_function_returns_columns_labels_and_features(loader_module) -> None:
    cfg = cfg_for(
        "loader",
        None,
        f"data.loader={loader_module}:load",
        "task.type=multilabel",
        "task.separator='|'",
    )
    s = load_splits(cfg)
    assert s.schema.names == ("x", "tag") and s.label_names == ("a", "b", "c")
    odd = all_rows(s, "x").astype(int) % 2 == 1
    y = np.concatenate([s.y_train, s.y_val, s.y_test])
    np.testing.assert_array_equal(y[odd], np.tile([1.0, 1.0, 0.0], (int(odd.sum()), 1)))
    assert load_splits(cfg).fingerprint == s.fingerprint


@pytest.mark.parametrize(
    ("function", "fragment"),
    [
        ("broken", "returned 2 labels and columns of lengths {'x': 3}"),
        ("fails", "the function failed. Received: KeyError: 'no such table' (at "),
        ("absent", "module 'my_loader' has no function 'absent'"),
    ],
)
def test_a_failing_loader_is_a_data_error_naming_the_function(loader_module, function, fragment):
    cfg = cfg_for("loader", None, f"data.loader={loader_module}:{function}")
    with pytest.raises(DataError) as err:
        load_splits(cfg)
    assert f"data.loader 'my_loader:{function}'" in str(err.value)
    assert fragment in str(err.value) and "Traceback" not in str(err.value)


def test_a_loader_module_that_does_not_exist_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="module 'no_such_loader_mod' not found"):
        load_splits(cfg_for("loader", None, "data.loader=no_such_loader_mod:load"))


def test_data_changed_fingerprints_text_folders_and_loaders_as_load_splits_does(
    tmp_path: Path, loader_module
) -> None:
    from tfship.datachange import scan

    for c in ("neg", "pos"):
        (tmp_path / "t" / c).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "t" / c / f"{i}.txt").write_text(f"{c} {i}", "utf-8")
    for cfg in (
        cfg_for("text_folder", tmp_path / "t"),
        cfg_for("loader", None, f"data.loader={loader_module}:load"),
    ):
        assert scan(cfg).fingerprint == load_splits(cfg).fingerprint
