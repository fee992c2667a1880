"""What every source's examples must satisfy before they are split: labels and pixel values.

Labels are encoded by the task (tfship.task); before that the data stage refuses what no task
can use: missing labels (None, NaN, an empty string), and label names that are not printable
text of at most MAX_LABEL_CHARS (they become `class_name` outputs and report headings). For
tasks that stratify, every class needs MIN_PER_CLASS examples, one for each split.

Pixels: finite and in [0, 255], the serving signature's contract (the model rescales itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfship.errors import DataError

MAX_LABEL_CHARS = 200
MIN_PER_CLASS = 3  # one each for train, validation and test
_SHOWN_ROWS = 5


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    if isinstance(value, str | bytes | np.str_ | np.bytes_):
        return not value.strip()
    return False


def missing_label_rows(labels: Any, empty_ok: bool = False) -> list[int]:
    """Rows whose label is missing: None, NaN, "" (any NaN in a row of several numbers); with
    `empty_ok` an empty cell is a value (a multilabel example with no labels): none is missing."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "biuf":
        if labels.dtype.kind != "f":
            return []
        rows = np.isnan(labels.reshape(len(labels), -1)).any(axis=1)
        return np.flatnonzero(rows).tolist()
    return [] if empty_ok else [i for i, v in enumerate(labels) if _missing(v)]


def check_labels_present(labels: Any, empty_ok: bool = False) -> None:
    """DataError with the count and the first rows when any label is missing."""
    rows = missing_label_rows(labels, empty_ok)
    if rows:
        shown = ", ".join(map(str, rows[:_SHOWN_ROWS]))
        more = f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else ""
        raise DataError(
            f"{len(rows)} of {len(labels)} examples have no label (missing, NaN or empty): "
            f"row(s) {shown}{more}; expected a label for every example",
            hint="drop unlabelled examples, or fix data.label to name the label column",
        )


def check_label_names(names: Sequence[str]) -> None:
    """Label names are outputs (`class_name`) and headings: printable, not too long."""
    for name in names:
        if len(name) > MAX_LABEL_CHARS or not name.isprintable() or not name.strip():
            raise DataError(
                f"label {name[:40]!r} is not a printable class name of at most "
                f"{MAX_LABEL_CHARS} characters",
                hint="rename the class (folder name or label value)",
            )


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


def check_class_sizes(key: np.ndarray, class_names: Sequence[str]) -> None:
    """Every class of a stratified task needs MIN_PER_CLASS examples, one for each split.

    `key` is the task's stratify key (class ids, usually indexing `class_names`).
    """
    ids, counts = np.unique(np.asarray(key), return_counts=True)

    def name(c: Any) -> str:
        i = int(c)
        return class_names[i] if 0 <= i < len(class_names) else str(c)

    scarce = sorted(
        (int(n), name(c)) for c, n in zip(ids, counts, strict=True) if n < MIN_PER_CLASS
    )
    if scarce:
        listed = ", ".join(f"'{label}' ({n})" for n, label in scarce[:5])
        raise DataError(
            f"{len(scarce)} class(es) have fewer than {MIN_PER_CLASS} examples, too few to "
            f"appear in train, validation and test: {listed}",
            hint="add examples of these classes, remove them, or raise data.limit",
        )
