"""Streaming statistics (what TFDV computes), merged batch by batch in bounded memory.

Per feature: `count` (examples), `missing`; numeric (and image pixel values): `min`, `max`,
`mean`, `std` (Chan's parallel merge of per-batch moments, so the result does not depend on
the batch size beyond float rounding); categorical: `top` (the `top_k` most frequent values
with counts), `distinct` (values seen, a lower bound once the table was pruned) and `other`
(the count of values outside `top`); text: `mean_length` in UTF-8 bytes. The label is
described the same way (categorical unless its dtype is float32).

The frequency table holds at most `max_vocabulary` values: beyond that the least frequent half
is dropped (counts of values seen again restart), so `top` is exact for values much more
frequent than 1 / max_vocabulary and approximate for the tail.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfship.data.schema import Kind, Schema

STATS_FORMAT = "tfship-statistics/1"


@dataclass
class _Numeric:
    count: int = 0  # examples
    values: int = 0  # non-missing numbers (a vector feature has several per example)
    missing: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def update(self, arr: np.ndarray) -> None:
        arr = np.asarray(arr, dtype=np.float64)
        self.count += arr.shape[0] if arr.ndim else 1
        flat = arr.ravel()
        nan = np.isnan(flat)
        self.missing += int(nan.sum())
        v = flat[~nan]
        if not v.size:
            return
        n_b, mean_b = v.size, float(v.mean())
        m2_b = float(((v - mean_b) ** 2).sum())
        n = self.values + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.values * n_b / n
        self.values = n
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))

    def to_json(self) -> dict[str, Any]:
        std = math.sqrt(self.m2 / self.values) if self.values else None
        return {
            "type": "numeric",
            "count": self.count,
            "missing": self.missing,
            "min": self.lo if self.values else None,
            "max": self.hi if self.values else None,
            "mean": self.mean if self.values else None,
            "std": std,
        }


@dataclass
class _Categorical:
    top_k: int
    max_vocabulary: int
    text: bool = False
    count: int = 0
    missing: int = 0
    chars: int = 0
    pruned: bool = False
    freq: Counter = field(default_factory=Counter)

    def update(self, arr: np.ndarray) -> None:
        flat = np.asarray(arr).ravel()
        self.count += flat.size
        present = flat[flat != -1] if flat.dtype.kind in "iu" else flat[flat != b""]
        if flat.dtype.kind not in "iu":
            present = present[present != ""]
        self.missing += flat.size - present.size
        if self.text:
            self.chars += sum(map(len, present.tolist()))
            return
        if not present.size:
            return
        values, counts = np.unique(present, return_counts=True)
        self.freq.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
        if len(self.freq) > self.max_vocabulary:
            self.freq = Counter(dict(self.freq.most_common(self.max_vocabulary // 2)))
            self.pruned = True

    def to_json(self) -> dict[str, Any]:
        present = self.count - self.missing
        if self.text:
            return {
                "type": "text",
                "count": self.count,
                "missing": self.missing,
                "mean_length": self.chars / present if present else None,
            }
        top = [(_text(v), c) for v, c in self.freq.most_common(self.top_k)]
        return {
            "type": "categorical",
            "count": self.count,
            "missing": self.missing,
            "distinct": len(self.freq),
            "distinct_is_lower_bound": self.pruned,
            "top": [[v, c] for v, c in top],
            "other": present - sum(c for _, c in top),
        }


def _text(value: Any) -> str:
    """A vocabulary value as JSON text: str(int), UTF-8 bytes decoded (invalid bytes replaced)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class StatsAccumulator:
    """Feed `update(features, labels)` with NumPy batches; `to_json()` the result."""

    def __init__(
        self,
        schema: Schema,
        label_dtype: str = "int64",
        *,
        top_k: int = 200,
        max_vocabulary: int = 100_000,
    ) -> None:
        self.schema = schema
        self.examples = 0
        self.features: dict[str, Any] = {}
        for f in schema.features:
            if f.kind in (Kind.NUMERIC, Kind.IMAGE):
                self.features[f.name] = _Numeric()
            else:
                self.features[f.name] = _Categorical(
                    top_k, max_vocabulary, text=f.kind is Kind.TEXT
                )
        self.label: Any = (
            _Numeric() if label_dtype.startswith("float") else _Categorical(top_k, max_vocabulary)
        )

    def update(self, features: dict[str, Any], labels: Any) -> None:
        n = None
        for name, acc in self.features.items():
            arr = np.asarray(features[name])
            n = arr.shape[0] if n is None else n
            acc.update(arr)
        self.label.update(np.asarray(labels))
        self.examples += int(n or 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATS_FORMAT,
            "examples": self.examples,
            "features": {name: acc.to_json() for name, acc in self.features.items()},
            "label": {"name": self.schema.label, **self.label.to_json()},
        }
