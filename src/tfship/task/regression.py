"""`RegressionTask`: one or more real values per example (linear outputs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfship.errors import ConfigError, DataError, ModelError
from tfship.task import labels as _labels
from tfship.task.base import Direction, Task, TaskType
from tfship.task.metrics import NAN, defined, quiet, thin
from tfship.task.plots import PlotSpec

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

_LOSSES = {
    "mean_squared_error": "MeanSquaredError",
    "mean_absolute_error": "MeanAbsoluteError",
    "huber": "Huber",
    "log_cosh": "LogCosh",
}
_PLOTTED_OUTPUTS = 4  # residual plots drawn for at most this many outputs
_PLOTTED_POINTS = 2000


@dataclass(frozen=True, kw_only=True)
class RegressionTask(Task):
    """One or more real targets per example: linear outputs, mean squared error.

    Raw labels: one number per example, or a sequence of k numbers (k outputs, the same k for
    every example); numeric strings are read as numbers. Missing or infinite targets are
    refused. Label names name the outputs: `target` for one, `target_0` ... otherwise, unless
    the data stage passes the label columns' names. Encoded labels are float32 [n, k]. Splits
    are not stratified; `class_weight` does not apply.

    Metrics (evaluation; with k outputs, rmse, mae and r2 are averaged over the outputs):
        rmse: root mean squared error. mae: mean absolute error.
        r2: coefficient of determination (NaN when the targets do not vary or there are
            fewer than 2 examples).
        mape: mean absolute percentage error as a fraction (0.1 = 10 %), scikit-learn's
            definition, over the target values whose magnitude is above `mape_min_target`;
            targets at or below it (zeros, by default) would divide by ~0, so they are left
            out and counted in a note; NaN when every target is left out.

    Args:
        loss: `mean_squared_error` (default), `mean_absolute_error`, `huber` or `log_cosh`.
        mape_min_target: targets with |y| <= this are left out of mape (default 0.0).
    """

    type: ClassVar[str] = TaskType.REGRESSION
    METRICS: ClassVar[dict[str, Direction]] = {
        "rmse": "lower",
        "mae": "lower",
        "r2": "higher",
        "mape": "lower",
    }
    STATISTICS: ClassVar[tuple[str, ...]] = ("squared_error", "absolute_error", "values")
    SUMMARY: ClassVar[dict[str, Direction]] = {"rmse": "lower", "mae": "lower"}
    LOSSES: ClassVar[tuple[str, ...]] = tuple(_LOSSES)
    score_output: ClassVar[str] = "prediction"

    mape_min_target: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.class_weight is not None:
            raise ConfigError(
                "task.class_weight does not apply to the regression task",
                hint="remove task.class_weight",
            )
        value = self.mape_min_target
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ConfigError(f"task.mape_min_target={value!r}: expected a number >= 0")

    # --- labels ------------------------------------------------------------------------------

    def infer_label_names(self, raw: Any) -> tuple[str, ...]:
        width = _values(raw).shape[1]
        return ("target",) if width == 1 else tuple(f"target_{j}" for j in range(width))

    def encode_labels(self, raw: Any, label_names: Sequence[str]) -> np.ndarray:
        """float32 [n, len(label_names)]."""
        values = _values(raw, width=len(label_names))
        if values.shape[1] != len(label_names):
            raise DataError(
                f"the labels hold {values.shape[1]} target value(s) per example; expected "
                f"{len(label_names)} ({list(label_names)[:20]})"
            )
        return values.astype(np.float32)

    # --- training ----------------------------------------------------------------------------

    def keras_loss(self) -> keras.losses.Loss:
        import keras

        return getattr(keras.losses, _LOSSES[self.loss or self.LOSSES[0]])(reduction=None)

    def per_example_loss(
        self, y: tf.Tensor, logits: tf.Tensor, class_weights: np.ndarray | None = None
    ) -> tf.Tensor:
        import tensorflow as tf

        logits = tf.cast(logits, tf.float32)
        return self.keras_loss()(tf.reshape(tf.cast(y, tf.float32), tf.shape(logits)), logits)

    def step_statistics(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        logits = tf.cast(logits, tf.float32)
        error = logits - tf.reshape(tf.cast(y, tf.float32), tf.shape(logits))
        return tf.stack(
            [
                tf.reduce_sum(tf.square(error)),
                tf.reduce_sum(tf.abs(error)),
                tf.cast(tf.size(error), tf.float32),
            ]
        )

    def summarize(self, sums: Sequence[float], count: float) -> dict[str, float]:
        """rmse and mae over every target value (pooled over the outputs)."""
        squared, absolute, values = (float(v) for v in sums)
        values = max(values, 1.0)
        return {"rmse": (squared / values) ** 0.5, "mae": absolute / values}

    # --- serving -----------------------------------------------------------------------------

    def serving_outputs(self, logits: tf.Tensor, label_names: Sequence[str]) -> dict[str, Any]:
        """`prediction` float32: [n] for one target, [n, k] for k."""
        import tensorflow as tf

        prediction = tf.cast(logits, tf.float32)
        if len(label_names) == 1:
            prediction = tf.reshape(prediction, [-1])
        return {"prediction": prediction}

    def example_methods(self, label_names: Sequence[str]) -> tuple[str, ...]:
        # TF Serving's Regress answers one value per example.
        return ("regress",) if len(label_names) == 1 else ()

    def example_outputs(
        self, method: str, logits: tf.Tensor, label_names: Sequence[str]
    ) -> dict[str, Any]:
        """regress (one target only): `outputs` float32 [n]."""
        import tensorflow as tf

        if method != "regress" or len(label_names) != 1:
            return super().example_outputs(method, logits, label_names)
        return {"outputs": tf.reshape(tf.cast(logits, tf.float32), [-1])}

    def scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        values = np.asarray(logits, dtype=np.float64)
        return values.reshape(-1) if values.ndim == 2 and values.shape[1] == 1 else values

    # --- evaluation --------------------------------------------------------------------------

    def _metrics(self, y: np.ndarray, pred: np.ndarray, notes: dict[str, str]) -> dict:
        from sklearn.metrics import (
            mean_absolute_error,
            mean_absolute_percentage_error,
            r2_score,
            root_mean_squared_error,
        )

        y, pred = _paired(y, pred)
        values = {
            "rmse": float(root_mean_squared_error(y, pred)),
            "mae": float(mean_absolute_error(y, pred)),
        }
        if len(y) < 2:
            values["r2"] = NAN
            notes["r2"] = "needs at least 2 examples"
        else:
            values["r2"] = defined(
                quiet(r2_score, y, pred, force_finite=False),
                notes,
                "r2",
                "the targets do not vary, so R² is undefined",
            )
        kept = np.abs(y) > self.mape_min_target
        left_out = int(kept.size - kept.sum())
        if not kept.any():
            values["mape"] = NAN
            notes["mape"] = f"every target is within ±{self.mape_min_target} of 0"
        else:
            values["mape"] = float(mean_absolute_percentage_error(y[kept], pred[kept]))
            if left_out:
                notes["mape"] = (
                    f"{left_out} of {kept.size} target values within ±{self.mape_min_target} "
                    f"of 0 left out"
                )
        return values

    def breakdown(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str]
    ) -> dict[str, Any]:
        """`per_output`: name -> rmse, mae, r2 (None where undefined)."""
        y, pred = _paired(y_true, self.scores(outputs, label_names))
        per_output = {}
        for j, name in enumerate(label_names):
            result = RegressionTask(mape_min_target=self.mape_min_target).measure(
                y[:, j : j + 1], pred[:, j]
            )
            per_output[name] = {
                k: (None if np.isnan(v) else v)
                for k, v in result.values.items()
                if k in ("rmse", "mae", "r2")
            }
        return {"per_output": per_output}

    def report_plots(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str]
    ) -> list[PlotSpec]:
        """Residuals (target - prediction) against the prediction, one plot per output."""
        y, pred = _paired(y_true, self.scores(outputs, label_names))
        plots = []
        for j, name in enumerate(list(label_names)[:_PLOTTED_OUTPUTS]):
            suffix = "" if len(label_names) == 1 else f"_{j}"
            plots.append(
                PlotSpec(
                    f"residuals{suffix}",
                    "scatter",
                    f"Residuals: {name} (test split)",
                    "prediction",
                    "target - prediction",
                    {"examples": thin(pred[:, j], y[:, j] - pred[:, j], _PLOTTED_POINTS)},
                    reference="zero",
                )
            )
        return plots


def _paired(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    y = y.reshape(len(y), -1)
    pred = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    if y.shape != pred.shape:
        raise ModelError(
            f"the model predicts {pred.shape[1]} value(s) per example; the labels hold {y.shape[1]}"
        )
    return y, pred


def _values(raw: Any, width: int | None = None) -> np.ndarray:
    """Numeric targets [n, k], refusing non-numbers, ragged rows and missing values."""
    rows = _labels.as_rows(raw)
    if not rows:
        return np.zeros((0, width or 1))
    try:
        values = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        values = _rowwise(rows)
    values = values.reshape(len(rows), -1)
    if values.shape[1] == 0:
        raise DataError("regression labels hold no target value")
    bad = list(np.flatnonzero(~np.isfinite(values).all(axis=1)))
    if bad:
        raise DataError(
            f"{len(bad)} of {len(rows)} regression labels are missing or not finite "
            f"({_labels.rows_text(bad)})",
            hint="drop or fill examples without a target",
        )
    return values


def _rowwise(rows: list[Any]) -> np.ndarray:
    # The slow path only runs to say which rows are wrong.
    parsed: list[np.ndarray] = []
    bad: list[int] = []
    for i, row in enumerate(rows):
        try:
            parsed.append(np.asarray(row, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError):
            bad.append(i)
    if bad:
        raise DataError(
            f"regression labels must be numbers; {_labels.rows_text(bad)} hold "
            f"{str(rows[bad[0]])[:40]!r}",
            hint="check the label column",
        )
    widths = sorted({len(p) for p in parsed})
    if len(widths) == 1:
        return np.stack(parsed)
    raise DataError(
        f"every example needs the same number of target values; found {widths}",
        hint="give each example all of its targets",
    )
