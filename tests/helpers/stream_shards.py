"""Generated shards for the streaming tests and benchmark: TFRecord, CSV and Parquet.

Every example has an integer `id` (unique across shards), a numeric `x` (normal, mean
`shift`), a numeric vector `v` [3], a categorical `color` (a skewed vocabulary; `new_colors`
adds values the reference never saw), a text `note` and an int64 label `y` = id % 3.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

from tfship.data.schema import Feature, Kind, Schema

COLORS = ["red", "green", "blue", "black", "white"]
COLOR_P = [0.4, 0.25, 0.2, 0.1, 0.05]


def schema() -> Schema:
    return Schema(
        (
            Feature("id", Kind.CATEGORICAL, "int64"),
            Feature("x", Kind.NUMERIC, "float32"),
            Feature("v", Kind.NUMERIC, "float32", (3,)),
            Feature("color", Kind.CATEGORICAL, "string"),
            Feature("note", Kind.TEXT, "string"),
        ),
        "y",
    )


def scalar_schema() -> Schema:
    """Without the vector feature (CSV holds scalars only)."""
    s = schema()
    return Schema(tuple(f for f in s.features if f.name != "v"), "y")


def rows(start: int, n: int, seed: int, shift: float = 0.0, new_colors: bool = False) -> dict:
    rng = np.random.default_rng([seed, start])
    colors = [*COLORS, "purple", "orange"] if new_colors else COLORS
    p = COLOR_P if not new_colors else [0.1, 0.1, 0.1, 0.1, 0.1, 0.25, 0.25]
    ids = np.arange(start, start + n)
    x = rng.normal(shift, 1.0, n).astype(np.float32)
    x[rng.random(n) < 0.05] = np.nan
    return {
        "id": ids,
        "x": x,
        "v": rng.normal(0, 1, (n, 3)).astype(np.float32),
        "color": rng.choice(colors, n, p=p),
        "note": np.array([f"note {i}" for i in ids]),
        "y": ids % 3,
    }


def example(r: dict, i: int, pad: int = 0) -> bytes:
    import tensorflow as tf

    F = tf.train.Feature
    feats = {
        "id": F(int64_list=tf.train.Int64List(value=[int(r["id"][i])])),
        "v": F(float_list=tf.train.FloatList(value=r["v"][i].tolist())),
        "color": F(bytes_list=tf.train.BytesList(value=[r["color"][i].encode()])),
        "note": F(bytes_list=tf.train.BytesList(value=[(r["note"][i] + " " * pad).encode()])),
        "y": F(int64_list=tf.train.Int64List(value=[int(r["y"][i])])),
    }
    if not np.isnan(r["x"][i]):  # absent = missing (NaN)
        feats["x"] = F(float_list=tf.train.FloatList(value=[float(r["x"][i])]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def write_tfrecords(
    folder: Path,
    files: int,
    per_file: int,
    *,
    seed: int = 0,
    shift: float = 0.0,
    new_colors: bool = False,
    gzip_: bool = False,
    pad: int = 0,
    prefix: str = "part",
) -> list[Path]:
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    opts = tf.io.TFRecordOptions(compression_type="GZIP" if gzip_ else "")
    for k in range(files):
        r = rows(k * per_file, per_file, seed, shift, new_colors)
        p = folder / f"{prefix}-{k:05d}.tfrecord{'.gz' if gzip_ else ''}"
        with tf.io.TFRecordWriter(str(p), opts) as w:
            for i in range(per_file):
                w.write(example(r, i, pad))
        out.append(p)
    return out


def write_csvs(
    folder: Path, files: int, per_file: int, *, seed: int = 0, gzip_: bool = False
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(files):
        r = rows(k * per_file, per_file, seed)
        p = folder / f"part-{k:05d}.csv{'.gz' if gzip_ else ''}"
        opener = gzip.open if gzip_ else open
        with opener(p, "wt", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "extra", "x", "color", "note", "y"])
            for i in range(per_file):
                x = "" if np.isnan(r["x"][i]) else repr(float(r["x"][i]))
                w.writerow([r["id"][i], "unused", x, r["color"][i], r["note"][i], r["y"][i]])
        out.append(p)
    return out


def write_parquets(folder: Path, files: int, per_file: int, *, seed: int = 0) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(files):
        r = rows(k * per_file, per_file, seed)
        table = pa.table(
            {
                "id": pa.array(r["id"], pa.int64()),
                "x": pa.array([None if np.isnan(v) else float(v) for v in r["x"]], pa.float64()),
                "v": pa.array(r["v"].tolist(), pa.list_(pa.float32())),
                "color": pa.array(r["color"].tolist()),
                "note": pa.array(r["note"].tolist()),
                "y": pa.array(r["y"], pa.int64()),
            }
        )
        p = folder / f"part-{k:05d}.parquet"
        pq.write_table(table, p, row_group_size=max(1, per_file // 2))
        out.append(p)
    return out
