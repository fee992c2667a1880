"""Feature values on the wire: JSON for golden requests, tf.Example for `:classify`/`:regress`.

One place decides how a feature of the schema is written wherever it leaves the process:
- JSON (the manifest's golden inputs, TF Serving's REST predict): numbers as numbers, strings
  as strings, bytes that are not UTF-8 as `{"b64": ...}` (TF Serving's convention);
- `tf.train.Example` (TF Serving's classify/regress APIs): numeric and image features as
  `float_list`, int64 categories as `int64_list`, strings as `bytes_list`; a missing value
  (NaN, "", -1) is left out of the example, and the parse spec's default puts it back;
- TF Serving's REST `examples` JSON: the same, and a float is always written with a decimal
  point (`7.0`): TF Serving reads a number without one as an int64 feature.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfship.data.schema import Feature, Kind, Schema


def json_text(value: Any) -> Any:
    """A string value as JSON: text when it is (UTF-8) text, else `{"b64": ...}`."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return str(value)


def json_values(feature: Feature, values: np.ndarray) -> list:
    """A batch of one feature as JSON values (see the module docstring)."""
    arr = np.asarray(values)
    if feature.is_string:
        return [json_text(v) for v in arr.ravel().tolist()]
    if feature.dtype == "int64":
        return arr.astype(np.int64).tolist()
    out = arr.astype(np.float64)
    # JSON has no NaN: a missing number is sent as null only in the manifest, never served.
    return np.where(np.isnan(out), None, out).tolist() if np.isnan(out).any() else out.tolist()


def from_json(feature: Feature, values: list) -> np.ndarray:
    """`json_values` read back: the array a signature input of this feature takes."""
    if feature.is_string:
        raw = [
            base64.b64decode(v["b64"]) if isinstance(v, dict) else str(v).encode("utf-8")
            for v in values
        ]
        return np.asarray(raw, dtype=object)
    if feature.dtype == "int64":
        return np.asarray(values, dtype=np.int64)
    return np.asarray(
        [np.nan if v is None else v for v in np.asarray(values, dtype=object).ravel()],
        dtype=np.float32,
    ).reshape(np.shape(values))


def _present(feature: Feature, value: Any) -> bool:
    if feature.is_string:
        return value not in ("", b"")
    if feature.dtype == "int64":
        return int(value) != -1
    arr = np.asarray(value, dtype=np.float64)
    return not (arr.size == 1 and math.isnan(float(arr.ravel()[0])))


def example_rows(schema: Schema, x: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """TF Serving's REST `examples`: one JSON object per row, missing values left out."""
    n = len(next(iter(x.values())))
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {}
        for f in schema.features:
            value = np.asarray(x[f.name])[i]
            if not _present(f, value):
                continue
            if f.is_string:
                row[f.name] = json_text(value)
            elif f.dtype == "int64":
                row[f.name] = int(value)
            else:
                flat = [float(v) for v in np.asarray(value, dtype=np.float64).ravel()]
                row[f.name] = flat[0] if not f.shape else flat
        rows.append(row)
    return rows


def serialize(schema: Schema, rows: list[Mapping[str, Any]]) -> list[bytes]:
    """`example_rows` as serialized tf.train.Example protos (what classify/regress parse)."""
    from tensorflow.core.example import example_pb2, feature_pb2

    out = []
    for row in rows:
        feats = {}
        for f in schema.features:
            if f.name not in row:
                continue
            value = row[f.name]
            if f.is_string:
                raw = base64.b64decode(value["b64"]) if isinstance(value, dict) else value.encode()
                feats[f.name] = feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[raw]))
            elif f.dtype == "int64":
                feats[f.name] = feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[value]))
            else:
                values = value if isinstance(value, list) else [value]
                feats[f.name] = feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
        example = example_pb2.Example(features=feature_pb2.Features(feature=feats))
        out.append(example.SerializeToString())
    return out


def parse_spec(schema: Schema) -> dict[str, Any]:
    """tf.io.parse_example's spec: a missing feature gets its missing value (images: required)."""
    import tensorflow as tf

    spec = {}
    for f in schema.features:
        if f.kind is Kind.IMAGE:
            spec[f.name] = tf.io.FixedLenFeature([int(np.prod(f.shape))], tf.float32)
        elif f.is_string:
            spec[f.name] = tf.io.FixedLenFeature([], tf.string, default_value="")
        elif f.dtype == "int64":
            spec[f.name] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
        else:
            size = int(np.prod(f.shape)) if f.shape else None
            shape = [size] if size is not None else []
            default = [float("nan")] * size if size is not None else float("nan")
            spec[f.name] = tf.io.FixedLenFeature(shape, tf.float32, default_value=default)
    return spec


def parsed_features(schema: Schema, parsed: Mapping[str, Any]) -> dict[str, Any]:
    """parse_example's output shaped like the serving signature's inputs."""
    import tensorflow as tf

    out = {}
    for f in schema.features:
        value = parsed[f.name]
        if f.shape and f.kind is not Kind.CATEGORICAL:
            value = tf.reshape(value, [-1, *f.shape])
        out[f.name] = value
    return out


def tensor_inputs(schema: Schema, x: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feature arrays in the dtypes the signature takes (strings as bytes objects)."""
    out = {}
    for f in schema.features:
        arr = np.asarray(x[f.name])
        if f.is_string:
            out[f.name] = np.asarray(
                [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in arr.ravel()],
                dtype=object,
            ).reshape(arr.shape)
        else:
            out[f.name] = arr.astype(f.dtype)
    return out
