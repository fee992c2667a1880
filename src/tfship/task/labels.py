"""Reading raw labels: one canonical text key per label value, and errors that name the rows.

Loaders hand labels over as whatever the source holds (Python ints, numpy scalars, strings,
bytes from TFRecords, floats from CSV readers that saw a blank). A label is identified by its
text key, so `3`, `np.int64(3)`, `3.0` and `"3"` are the same class, and label names in
`data.json` are always strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from tfship.errors import DataError

_SHOWN_ROWS = 5  # rows named in an error; the rest are counted


def is_missing(value: Any) -> bool:
    """None, NaN and pandas' NA: a label the data does not have."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return type(value).__name__ in {"NAType", "NaTType"}


def is_collection(value: Any) -> bool:
    """A value holding several labels (list, tuple, set, 1-D array) rather than one."""
    return isinstance(value, list | tuple | set | frozenset | np.ndarray)


def label_key(value: Any) -> str:
    """The text key of one label value: integral numbers lose their `.0`, bytes are decoded."""
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(
                f"label {bytes(value)[:40]!r} is not UTF-8 text",
                hint="store labels as UTF-8 strings or integers",
            ) from None
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value)


def ordered(keys: Iterable[str]) -> tuple[str, ...]:
    """Label names in their canonical order: integers numerically ("2" before "10"), then text.

    The order fixes the class ids, so it must not depend on the order the data arrives in; it
    is the order tfship has always used, so existing runs keep their ids.
    """

    def sort_key(name: str) -> tuple[int, int, str]:
        if name.lstrip("-").isdigit():
            return (0, int(name), "")
        return (1, 0, name)

    return tuple(sorted(set(keys), key=sort_key))


def rows_text(rows: Sequence[int]) -> str:
    """'row 3' / 'rows 3, 7, 9 and 12 more' (0-based, as in the loaded data)."""
    shown = ", ".join(str(r) for r in rows[:_SHOWN_ROWS])
    more = f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def as_rows(raw: Any) -> list[Any]:
    """The labels as a list with one entry per example; a 2-D array gives one row each."""
    if isinstance(raw, str | bytes):
        raise DataError(
            f"labels must be a sequence with one entry per example; received a "
            f"{type(raw).__name__} ({raw[:40]!r})"
        )
    if isinstance(raw, np.ndarray):
        if raw.ndim == 0:
            raise DataError(
                "labels must be a sequence with one entry per example; received a scalar"
            )
        return list(raw)
    try:
        return list(raw)
    except TypeError:
        raise DataError(
            f"labels must be a sequence with one entry per example; received {type(raw).__name__}"
        ) from None


def require_present(rows: Sequence[Any]) -> None:
    """Refuse missing labels, naming where they are."""
    missing = [i for i, v in enumerate(rows) if is_missing(v)]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(rows)} examples have no label ({rows_text(missing)})",
            hint="drop unlabelled examples, or give them a label",
        )


def scalar_keys(raw: Any, task: str) -> list[str]:
    """Keys of one-label-per-example data (classification, binary), validated."""
    if isinstance(raw, np.ndarray) and raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if isinstance(raw, np.ndarray) and raw.ndim > 1:
        raise DataError(
            f"{task} takes one label per example; received an array of shape {list(raw.shape)}",
            hint="for one-hot labels pass their argmax; for several labels per example set "
            "task.type: multilabel",
        )
    rows = as_rows(raw)
    require_present(rows)
    nested = [i for i, v in enumerate(rows) if is_collection(v)]
    if nested:
        raise DataError(
            f"{task} takes one label per example; {rows_text(nested)} hold several "
            f"({type(rows[nested[0]]).__name__})",
            hint="for several labels per example set task.type: multilabel",
        )
    return [label_key(v) for v in rows]


def index_of(keys: Sequence[str], label_names: Sequence[str], task: str) -> np.ndarray:
    """Ids of `keys` in `label_names`; unknown labels are refused, naming them and their rows."""
    index = {name: i for i, name in enumerate(label_names)}
    unknown = [i for i, k in enumerate(keys) if k not in index]
    if unknown:
        values = sorted({keys[i] for i in unknown})
        raise DataError(
            f"{task} labels {values[:10]} ({rows_text(unknown)}) are not among the "
            f"{len(label_names)} known labels {list(label_names)[:20]}",
            hint="the labels must be those the model was trained on (data.json label_names)",
        )
    return np.asarray([index[k] for k in keys], dtype=np.int64)
