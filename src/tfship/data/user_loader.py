"""`data.loader: module:function`: the user's own code loads the data.

The function is called as `fn(cfg.data)` and returns `(columns, labels)` or `(columns, labels,
features)`: `columns` maps feature name -> array (one row per example), `labels` has one entry
per example (whatever the task encodes), `features` is a `Schema` or a mapping like
`data.features` (name -> kind, or {kind, dtype, shape}); `data.features` in the config wins
over it. Anything that goes wrong in the user's code is a DataError (exit 4) naming the
function, with where in the user's code it failed, never a traceback (`tfship -v` logs it).
The fingerprint is computed over the returned arrays, so the same data gives the same one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfship.config import DataConfig
from tfship.data.infer import resolve_schema
from tfship.data.loaders import LoadedData
from tfship.data.schema import Schema
from tfship.errors import DataError
from tfship.usercode import describe, import_module

log = logging.getLogger(__name__)


def _detail(exc: BaseException) -> str:
    return describe(exc, "data.loader")


def _error(spec: str, what: str, hint: str) -> DataError:
    return DataError(f"data.loader '{spec}': {what}", hint=hint)


def resolve_loader(spec: str) -> Any:
    """The function named by 'module:function' (the config checked its form)."""
    module_name, _, func_name = spec.partition(":")
    module = import_module(module_name, lambda what, hint: _error(spec, what, hint), "the loader's")
    func = getattr(module, func_name, None)
    if not callable(func):
        raise _error(
            spec,
            f"module '{module_name}' has no function '{func_name}' (found {type(func).__name__})",
            f"define `def {func_name}(data_cfg) -> (columns, labels[, features])`",
        )
    return func


def load_user(cfg: DataConfig) -> LoadedData:
    spec = str(cfg.loader)
    func = resolve_loader(spec)
    try:
        returned = func(cfg)
    except (Exception, SystemExit) as exc:
        raise _error(
            spec, f"the function failed. Received: {_detail(exc)}", "fix the loader function"
        ) from None
    if not isinstance(returned, tuple) or len(returned) not in (2, 3):
        raise _error(
            spec,
            f"returned {type(returned).__name__}; expected a tuple (columns, labels) or "
            "(columns, labels, features)",
            "return a dict of arrays and the labels, e.g. `return {'age': ages}, labels`",
        )
    raw_columns, labels = returned[0], returned[1]
    if not isinstance(raw_columns, Mapping) or not raw_columns:
        raise _error(
            spec,
            f"returned columns of type {type(raw_columns).__name__}; expected a non-empty dict "
            "feature name -> array",
            "return {'feature': np.array([...]), ...} as the first element",
        )
    columns = {str(k): _array(spec, str(k), v) for k, v in raw_columns.items()}
    n_labels = len(labels) if hasattr(labels, "__len__") else None
    lengths = {k: len(v) for k, v in columns.items()}
    if n_labels is None or any(n != n_labels for n in lengths.values()):
        raise _error(
            spec,
            f"returned {n_labels} labels and columns of lengths {lengths}; expected one label "
            "and one value per column for every example",
            "return arrays of the same length",
        )
    schema = None
    if len(returned) == 3 and returned[2] is not None and not cfg.features:
        declared = returned[2]
        if isinstance(declared, Schema):
            schema = declared
        elif isinstance(declared, Mapping):
            schema = resolve_schema(declared, columns, cfg.label)
        else:
            raise _error(
                spec,
                f"returned features of type {type(declared).__name__}; expected a Schema or a "
                "mapping name -> kind (like data.features)",
                "return e.g. {'age': 'numeric', 'city': 'categorical'} as the third element",
            )
    return LoadedData(columns, labels, schema, [], _content(spec, columns, labels))


def _array(spec: str, name: str, values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except Exception as exc:  # ragged lists and the like
        raise _error(
            spec, f"column {name!r} is not an array. Received: {_detail(exc)}", "fix the loader"
        ) from None
    if arr.ndim == 0:
        raise _error(spec, f"column {name!r} is a scalar; expected one value per example", "")
    return arr


def _content(spec: str, columns: dict[str, np.ndarray], labels: Any) -> bytes:
    """What identifies the returned data: names, dtypes, shapes and values of every array."""
    h = hashlib.sha256(f"data.loader {spec}".encode())
    for name in sorted(columns):
        arr = columns[name]
        h.update(f"\n{name}:{arr.dtype}:{arr.shape}\n".encode())
        if arr.dtype.kind == "O":
            h.update(repr(arr.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(arr).tobytes())
    rows = labels.tolist() if isinstance(labels, np.ndarray) else list(labels)
    h.update(b"\nlabels\n" + repr(rows).encode())
    return h.digest()
