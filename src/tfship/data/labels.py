"""What every source's examples must satisfy before they are split: labels and pixel values.

Labels: a class name (printable text) or a class index (a non-negative integer below 2**63;
integral floats and numeric text count as integers). -1 is refused as the usual "unlabelled"
marker, 2.5 as a regression target, NaN as missing. A label vector is accepted only as a
strict one-hot row (exactly one 1, every other entry 0), which is converted to its index;
multi-hot and soft labels are refused: the task is single-label classification.

Pixels: finite and in [0, 255], the serving signature's contract (the model rescales itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tfship.errors import DataError

MAX_LABEL_CHARS = 200
MIN_PER_CLASS = 3  # one each for train, validation and test
_INT64_LIMIT = 2**63


def _bad_index(value: Any, where: str) -> DataError:
    return DataError(
        f"{where}: label {value!r} is not a class; expected a non-negative integer class index "
        "(below 2**63) or a class name",
        hint="drop unlabelled examples (e.g. label -1); regression targets and fractional "
        "labels are not classes",
    )


def label(value: Any, where: str) -> int | str:
    """A raw label as an int (class index) or a class-name str; DataError if unusable."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(
                f"{where}: label {value[:40]!r} is not UTF-8 text",
                hint="store class names as UTF-8 strings or labels as integer class indices",
            ) from None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise DataError(f"{where} has an empty label; expected a class name or index")
        if len(text) > MAX_LABEL_CHARS or not text.isprintable():
            raise DataError(
                f"{where}: label {text[:40]!r} is not a printable class name of at most "
                f"{MAX_LABEL_CHARS} characters"
            )
        try:
            number: float | int = int(text)  # exact, also beyond float precision
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return text
        index = _index(number, where, shown=text)
        # "007" or "1.0" stay the class names they were written as; "7" sorts as a number.
        return index if str(index) == text else text
    if isinstance(value, (int, np.integer)):
        return _index(int(value), where)
    if isinstance(value, (float, np.floating)):
        return _index(float(value), where)
    raise DataError(
        f"{where}: label of type {type(value).__name__}; expected an integer class index or a "
        f"class name. Received: {str(value)[:40]!r}"
    )


def _index(number: float | int, where: str, shown: Any = None) -> int:
    shown = number if shown is None else shown
    if isinstance(number, float) and not (np.isfinite(number) and number == int(number)):
        raise _bad_index(shown, where)
    if not 0 <= int(number) < _INT64_LIMIT:
        raise _bad_index(shown, where)
    return int(number)


def from_vector(values: Sequence[Any], where: str) -> int | str:
    """One example's label given as a vector: one value, or a strict one-hot row."""
    if len(values) == 1:
        return label(values[0], where)
    row = np.asarray(values)
    if row.ndim == 1 and len(row) >= 2 and row.dtype.kind in "biuf":
        ones = row == 1
        if int(ones.sum()) == 1 and bool(np.all(ones | (row == 0))):
            return int(np.argmax(ones))
    shown = np.array2string(row[:10], separator=", ", threshold=10)
    raise DataError(
        f"{where}: label {shown} ({len(row)} values) is neither one class nor a one-hot row; "
        "expected a class index, a class name, or exactly one 1 among 0s",
        hint="multi-label (several 1s) and soft labels are not supported: store one class per "
        "example",
    )


def labels_from_array(y: np.ndarray, where: str) -> list[int | str]:
    """Labels of an array: shape (n,), a column (n, 1), or one-hot rows (n, k)."""
    if y.dtype.kind not in "biufUS":
        raise DataError(
            f"{where}: labels have dtype {y.dtype}; expected integer class indices or strings"
        )
    if y.ndim == 1:
        return [label(v, f"{where} example {i}") for i, v in enumerate(y.tolist())]
    if y.ndim == 2 and y.shape[1] >= 1:
        return [from_vector(row, f"{where} example {i}") for i, row in enumerate(y)]
    raise DataError(
        f"{where}: labels have shape {y.shape}; expected (n,) class indices or names, or (n, k) "
        "one-hot rows"
    )


def index_labels(raw: list[Any]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Int64 class indices and the class names they index (integers sort numerically)."""
    checked = [label(v, f"example {i}") for i, v in enumerate(raw)]
    ordered = sorted(set(checked), key=lambda v: (0, v, "") if isinstance(v, int) else (1, 0, v))
    index = {v: i for i, v in enumerate(ordered)}
    return np.asarray([index[v] for v in checked], dtype=np.int64), tuple(map(str, ordered))


def check_pixels(x: np.ndarray, *, finite_only: bool = False) -> None:
    """Raw pixels must be finite and in [0, 255] (the serving signature's contract)."""
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), x.shape))
        raise DataError(
            f"{int(bad.sum())} pixel value(s) are NaN or Inf; first at index {first} "
            f"(example {first[0]}); expected finite pixels in [0, 255]",
            hint="fix or drop those examples",
        )
    out = (x < 0) | (x > 255)
    if not finite_only and out.any():
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(out)), x.shape))
        raise DataError(
            f"{int(out.sum())} pixel value(s) are outside [0, 255]; first at index {first}: "
            f"{float(x[first])}; expected raw pixels in [0, 255]",
            hint="store raw pixels (uint8 range); the model rescales them itself, so do not "
            "normalise or standardise the data beforehand",
        )


def check_class_sizes(y: np.ndarray, class_names: Sequence[str]) -> None:
    """Every class present needs MIN_PER_CLASS examples, one for each split."""
    counts = np.bincount(y, minlength=len(class_names))
    scarce = sorted((int(n), class_names[c]) for c, n in enumerate(counts) if 0 < n < MIN_PER_CLASS)
    if scarce:
        listed = ", ".join(f"'{name}' ({n})" for n, name in scarce[:5])
        raise DataError(
            f"{len(scarce)} class(es) have fewer than {MIN_PER_CLASS} examples, too few to "
            f"appear in train, validation and test: {listed}",
            hint="add examples of these classes, remove them, or raise data.limit",
        )
