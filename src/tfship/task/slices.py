"""Sliced metrics: the task's metrics per value of a categorical feature (TFMA's slicing spec).

"recall >= 0.8 on every country" is a threshold checked on each slice of `country`. A slice
with fewer than `min_size` examples is reported but not gated: its metrics are too noisy to
fail (or pass) a model on, and a rare value would otherwise make the gate flip between runs.
A check with no gated slice at all fails, like the gate without thresholds: nothing was
measured, so nothing may pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfship.errors import ConfigError, DataError
from tfship.task.base import Task
from tfship.task.labels import as_rows, is_missing, label_key, ordered

DEFAULT_MIN_SLICE_SIZE = 30
MISSING_VALUE = "(missing)"  # the slice of examples without a value for the feature


@dataclass(frozen=True)
class Slice:
    """The task's metrics on the examples whose `feature` is `value`."""

    value: str
    count: int
    gated: bool  # count >= min_size
    metrics: dict[str, float]
    notes: dict[str, str]


@dataclass(frozen=True)
class SliceCheck:
    """One threshold checked on every gated slice of a feature."""

    feature: str
    metric: str
    minimum: float | None
    maximum: float | None
    ok: bool
    failing: tuple[tuple[str, float, str], ...]  # (slice value, metric value, why)
    reason: str


@dataclass(frozen=True)
class SlicedMetrics:
    """Metrics per value of one feature, in label order (integers numerically, then text)."""

    feature: str
    min_size: int
    slices: tuple[Slice, ...]

    def gated(self) -> tuple[Slice, ...]:
        return tuple(s for s in self.slices if s.gated)

    def check(
        self, metric: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> SliceCheck:
        """Whether `metric` is >= `minimum` and/or <= `maximum` on every gated slice.

        A NaN value fails (with the task's reason); no gated slice fails.
        """
        if minimum is None and maximum is None:
            raise ConfigError(f"a slice threshold on {metric!r} needs a minimum and/or maximum")
        gated = self.gated()
        bounds = " and ".join(
            text
            for text, bound in ((f">= {minimum}", minimum), (f"<= {maximum}", maximum))
            if bound is not None
        )
        if not gated:
            reason = (
                f"no value of {self.feature!r} has at least {self.min_size} examples "
                f"({len(self.slices)} slice(s)); nothing to check {metric} {bounds} on"
            )
            return SliceCheck(self.feature, metric, minimum, maximum, False, (), reason)
        if metric not in gated[0].metrics:
            raise ConfigError(
                f"slice threshold on {metric!r}: the task computes {sorted(gated[0].metrics)}"
            )
        failing = []
        for s in gated:
            value = s.metrics[metric]
            if math.isnan(value):
                failing.append((s.value, value, s.notes.get(metric, "undefined")))
            elif minimum is not None and value < minimum:
                failing.append((s.value, value, f"below the minimum {minimum}"))
            elif maximum is not None and value > maximum:
                failing.append((s.value, value, f"above the maximum {maximum}"))
        where = f"{len(gated)} slice(s) of {self.feature!r} with >= {self.min_size} examples"
        reason = (
            f"{metric} {bounds} on all {where}"
            if not failing
            else f"{metric} misses {bounds} on {len(failing)} of {where}: "
            + ", ".join(f"{v}={m:.4g} ({why})" for v, m, why in failing[:10])
        )
        return SliceCheck(
            self.feature, metric, minimum, maximum, not failing, tuple(failing), reason
        )

    def to_json(self) -> dict[str, Any]:
        """Strict JSON (NaN becomes null; its reason is in `notes`)."""
        return {
            "feature": self.feature,
            "min_size": self.min_size,
            "slices": [
                {
                    "value": s.value,
                    "count": s.count,
                    "gated": s.gated,
                    "metrics": {k: None if math.isnan(v) else v for k, v in s.metrics.items()},
                    "notes": s.notes,
                }
                for s in self.slices
            ],
        }


def sliced_metrics(
    task: Task,
    y_true: np.ndarray,
    outputs: Any,
    feature_values: Sequence[Any] | np.ndarray,
    *,
    feature: str,
    min_size: int = DEFAULT_MIN_SLICE_SIZE,
    label_names: Sequence[str] | None = None,
) -> SlicedMetrics:
    """`task`'s metrics on each value of a categorical feature.

    Args:
        y_true: encoded labels; outputs: the serving outputs (or the score array), as for
            `Task.evaluate`.
        feature_values: the feature's raw value for each example (missing values form the
            slice `(missing)`; `3`, `3.0` and `"3"` are one slice).
        feature: the feature's name, for messages and the report.
        min_size: slices with fewer examples are reported but not gated.
    """
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise ConfigError(f"slice min_size={min_size!r}: expected an integer >= 1")
    y = np.asarray(y_true)
    scores = task.scores(outputs, label_names)
    rows = as_rows(feature_values)
    if not (len(rows) == len(y) == len(scores)):
        raise DataError(
            f"slicing by {feature!r}: {len(rows)} feature values for {len(y)} labels and "
            f"{len(scores)} model outputs"
        )
    keys = np.asarray([MISSING_VALUE if is_missing(v) else label_key(v) for v in rows])
    slices = []
    for value in ordered(keys.tolist()):
        mask = keys == value
        result = task.measure(y[mask], scores[mask])
        count = int(mask.sum())
        slices.append(Slice(value, count, count >= min_size, result.values, result.notes))
    return SlicedMetrics(feature, min_size, tuple(slices))
