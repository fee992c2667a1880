"""From loaded columns to a Schema: infer kinds, apply `data.features`, convert the columns.

`infer_schema` guesses a kind per column from its values; `resolve_schema` lets the declared
kinds (`data.features`) win and fills in dtype and shape; `conform` converts every column to
its feature's in-memory form (tfship.data.schema's table) and checks it. Every mismatch is a
DataError (exit 4) naming the column, the row, the value found and the kind expected.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfship.data.schema import DTYPES, Feature, Kind, Schema
from tfship.errors import DataError

log = logging.getLogger(__name__)

#: A string column is `text` when the median value has at least this many words.
TEXT_MIN_WORDS = 3
#: Cells read as a missing number (CSV, string columns declared numeric).
MISSING_TEXT = frozenset({"", "na", "nan", "n/a", "null", "none"})


def is_missing_text(value: str) -> bool:
    return value.strip().lower() in MISSING_TEXT


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _as_str(value: Any, column: str, row: int) -> str:
    """One cell as text: bytes must be UTF-8 (a tf.string input must decode on the wire)."""
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(
                f"column {column!r} row {row}: value {bytes(value)[:40]!r} is not UTF-8 text; "
                "expected UTF-8 strings",
                hint="re-encode the strings as UTF-8",
            ) from None
    return str(value)


def column_kind(values: np.ndarray) -> str:
    """'number', 'string' or 'mixed' for an array (object arrays are looked into)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return "number"
    if arr.dtype.kind in "USO":
        present = [v for v in arr.ravel() if v is not None and not _nan(v)]
        if all(isinstance(v, str | bytes | np.str_ | np.bytes_) for v in present):
            return "string"
        if all(_is_number(v) for v in present):
            return "number"
    return "mixed"


def _nan(value: Any) -> bool:
    return isinstance(value, float | np.floating) and math.isnan(value)


def infer_schema(columns: Mapping[str, np.ndarray], label: str) -> Schema:
    """A Schema guessed from the values: float/int arrays are numeric (4-D: image), string
    columns are `text` when the median value has >= TEXT_MIN_WORDS words, else `categorical`."""
    return Schema(tuple(_infer_feature(n, v) for n, v in columns.items() if n != label), label)


def _infer_feature(name: str, values: np.ndarray) -> Feature:
    arr = np.asarray(values)
    what = column_kind(arr)
    if what == "number":
        shape = tuple(int(d) for d in arr.shape[1:])
        if arr.ndim == 4:
            return Feature(name, Kind.IMAGE, "float32", shape)
        return Feature(name, Kind.NUMERIC, "float32", shape)
    if what == "string" and arr.ndim == 1:
        words = [len(str(v).split()) for v in arr if v is not None and not _nan(v)]
        kind = Kind.TEXT if words and np.median(words) >= TEXT_MIN_WORDS else Kind.CATEGORICAL
        return Feature(name, kind, "string")
    sample = next((v for v in arr.ravel() if not _is_number(v)), None)
    raise DataError(
        f"column {name!r}: cannot infer its kind from values of dtype {arr.dtype} and shape "
        f"{list(arr.shape)} (e.g. {str(sample)[:40]!r}); expected numbers, or one string per "
        "example",
        hint=f"declare {name!r} in data.features, or fix the column",
    )


def resolve_schema(
    declared: Mapping[str, Any] | None, columns: Mapping[str, Any], label: str
) -> Schema:
    """The Schema of `columns`: `declared` (data.features: name -> kind or {kind, dtype, shape})
    wins; without it every non-label column is inferred. Declared columns must exist."""
    if not declared:
        return infer_schema(columns, label)
    absent = [n for n in declared if n not in columns]
    if absent:
        raise DataError(
            f"feature column(s) {absent} declared in data.features are not in the data; found "
            f"columns {sorted(columns)[:30]}",
            hint="fix the names in data.features (or data.label), or the data",
        )
    dropped = [n for n in columns if n not in declared and n != label]
    if dropped:
        log.info("columns not in data.features, not used: %s", dropped[:50])
    return Schema(tuple(_declared(n, d, columns[n]) for n, d in declared.items()), label)


def _declared(name: str, decl: Any, values: Any) -> Feature:
    if isinstance(decl, Feature):
        return decl
    if isinstance(decl, Mapping):
        kind, dtype, shape = decl.get("kind"), decl.get("dtype"), decl.get("shape")
    elif hasattr(decl, "kind"):  # config's FeatureDecl
        kind, dtype, shape = decl.kind, decl.dtype, decl.shape
    else:  # a bare kind
        kind, dtype, shape = decl, None, None
    try:
        kind = Kind(str(kind))
    except ValueError:
        raise DataError(
            f"feature {name!r}: kind {str(kind)[:40]!r} is not one tfship knows; expected one of "
            f"{[k.value for k in Kind]}"
        ) from None
    if shape is None and kind in (Kind.NUMERIC, Kind.IMAGE) and column_kind(values) == "number":
        shape = np.asarray(values).shape[1:]
    return Feature(name, kind, str(dtype or DTYPES[kind][0]), tuple(int(d) for d in shape or ()))


def conform(schema: Schema, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each schema feature's column converted to its in-memory form (columns the schema does
    not name are dropped); `schema.check` then checks the result."""
    return {f.name: _convert(f, columns[f.name]) for f in schema.features if f.name in columns}


def _bad(feature: Feature, row: int, value: Any, expected: str) -> DataError:
    return DataError(
        f"column {feature.name!r} row {row}: found {str(value)[:40]!r}; expected {expected} "
        f"for a {feature.kind} feature of dtype {feature.dtype}",
        hint=f"fix the data, or declare {feature.name!r} with another kind in data.features",
    )


def _convert(feature: Feature, values: Any) -> np.ndarray:
    arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if feature.is_string:
        return _to_strings(feature, arr)
    if feature.dtype == "int64":
        return _to_int64(feature, arr)
    if arr.dtype.kind in "biuf":
        # Through float64: int64 values beyond float32's range are reported, not rounded away.
        return arr.astype(np.float64).astype(np.float32)
    if arr.dtype.kind in "USO" and arr.ndim == 1:
        return _to_float_array(feature, arr).astype(np.float32)
    return arr  # schema.check names the dtype found


def _to_float(feature: Feature, row: int, value: Any) -> float:
    if value is None or _nan(value):
        return math.nan
    if _is_number(value):
        return float(value)
    text = _as_str(value, feature.name, row)
    if is_missing_text(text):
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise _bad(feature, row, text, "a number (or an empty / NA cell)") from None


def _to_int64(feature: Feature, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 1:
        raise DataError(
            f"column {feature.name!r}: found values of shape {list(arr.shape[1:])} per example; "
            "expected one integer category id per example"
        )
    if arr.dtype.kind in "biu":
        return arr.astype(np.int64)
    floats = arr if arr.dtype.kind == "f" else _to_float_array(feature, arr)
    floats = floats.astype(np.float64)
    bad = ~np.isnan(floats) & ((floats != np.round(floats)) | (np.abs(floats) >= 2.0**63))
    if bad.any():
        row = int(np.argmax(bad))
        raise _bad(feature, row, arr[row], "an integer category id")
    # NaN (an empty cell) is the int64 missing value, -1 (tfship.data.schema).
    return np.where(np.isnan(floats), -1, floats).astype(np.int64)


def _to_float_array(feature: Feature, arr: np.ndarray) -> np.ndarray:
    return np.asarray([_to_float(feature, i, v) for i, v in enumerate(arr.tolist())], np.float64)


def _to_strings(feature: Feature, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 1:
        raise DataError(
            f"column {feature.name!r}: found values of shape {list(arr.shape[1:])} per example; "
            f"expected one string per example for a {feature.kind} feature"
        )
    out = np.empty(len(arr), dtype=object)
    for i, v in enumerate(arr.tolist()):
        if v is None or _nan(v):
            out[i] = ""
        elif isinstance(v, float) and v.is_integer():
            out[i] = str(int(v))  # 3.0 read from a numeric column is the category "3"
        else:
            out[i] = _as_str(v, feature.name, i)
    return out
