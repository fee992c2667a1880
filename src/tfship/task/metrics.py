"""Metric helpers shared by the built-in tasks: scikit-learn calls that never crash on
degenerate data, NumPy expected calibration error, and NumPy link functions.

A metric that is undefined on the examples at hand (one class only for ROC AUC, no positive
example for recall, an empty slice) is NaN, and the reason goes into the notes next to it. The
gate treats NaN as failing, so an undefined metric can never pass a threshold by accident.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

NAN = float("nan")


def quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a scikit-learn metric without its warnings: undefined cases are reported as notes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def defined(value: Any, notes: dict[str, str], name: str, reason: str) -> float:
    """`value` as a float; a NaN or infinite value becomes NaN with `reason` in `notes`."""
    number = float(value)
    if not math.isfinite(number):
        notes.setdefault(name, reason)
        return NAN
    return number


def softmax(logits: np.ndarray) -> np.ndarray:
    from scipy.special import softmax as _softmax

    return _softmax(np.asarray(logits, dtype=np.float64), axis=-1)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(np.asarray(logits, dtype=np.float64))


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of positive-class probabilities, equal-width bins.

    ECE = sum over bins b of (n_b / n) * |fraction of positives in b - mean probability in b|,
    bins [0, 1/B), [1/B, 2/B), ..., [(B-1)/B, 1] (the same bins as
    `sklearn.calibration.calibration_curve(strategy="uniform")`, which draws the plot). 0 is
    perfectly calibrated. NaN for no examples.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(prob, dtype=np.float64).reshape(-1)
    if not len(p):
        return NAN
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    positives = np.bincount(which, weights=y, minlength=bins)
    confidence = np.bincount(which, weights=p, minlength=bins)
    # sum_b (n_b/n) |pos_b/n_b - conf_b/n_b| = sum_b |pos_b - conf_b| / n
    return float(np.abs(positives - confidence).sum() / len(p))


def recall_at_precision(
    y_true: np.ndarray, prob: np.ndarray, target: float
) -> tuple[float, float | None]:
    """The highest recall at any threshold whose precision is at least `target`, and that
    threshold (None when only "predict nothing positive" reaches it: recall 0).

    Read off `sklearn.metrics.precision_recall_curve`; NaN when there is no positive example.
    """
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true).reshape(-1)
    if not (y == 1).any():
        return NAN, None
    precision, recall, thresholds = quiet(precision_recall_curve, y, prob)
    # The curve's last point (precision 1, recall 0) has no threshold: it is "predict none".
    ok = np.flatnonzero(precision[:-1] >= target)
    if not len(ok):
        return 0.0, None
    best = ok[np.argmax(recall[ok])]
    return float(recall[best]), float(thresholds[best])


def thin(x: np.ndarray, y: np.ndarray, points: int = 400) -> tuple[list[float], list[float]]:
    """At most `points` points of a curve, first and last kept, for plot specs in JSON."""
    if len(x) > points:
        keep = np.unique(np.linspace(0, len(x) - 1, points).round().astype(np.int64))
        x, y = x[keep], y[keep]
    return [float(v) for v in x], [float(v) for v in y]
