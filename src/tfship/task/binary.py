"""`BinaryTask`: one probability per example (sigmoid over one logit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfship.errors import ConfigError, DataError
from tfship.task import labels as _labels
from tfship.task.base import Direction, Task, TaskType, check_fraction
from tfship.task.metrics import (
    NAN,
    defined,
    expected_calibration_error,
    quiet,
    recall_at_precision,
    sigmoid,
    thin,
)
from tfship.task.plots import PlotSpec

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


@dataclass(frozen=True, kw_only=True)
class BinaryTask(Task):
    """Two classes, one probability: sigmoid over one logit, binary cross-entropy.

    Which class is positive: `positive_label` when set; otherwise the second of the two label
    names in tfship's label order (integers numerically, then text alphabetically), so `1` for
    0/1, `True` for booleans. Encoded labels are float32 [n, 1]: 1.0 = positive.

    An example is predicted positive when its probability is >= `threshold`.

    Metrics (evaluation, from the served `probability`):
        roc_auc: area under the ROC curve (NaN when only one class is present).
        pr_auc: average precision, scikit-learn's step-wise area under the precision-recall
            curve (NaN without a positive example).
        precision, recall, f1: of the positive class at `threshold` (NaN where the
            denominator is 0: nothing predicted positive, no positive example).
        recall_at_precision: the highest recall at any threshold whose precision is at least
            `precision_target` (0.0 when none reaches it; NaN without a positive example).
        log_loss: mean binary cross-entropy. brier: mean squared error of the probability.
        ece: expected calibration error over `calibration_bins` equal-width bins.

    Args:
        threshold: decision threshold for `class_id`, precision, recall and f1 (default 0.5).
        precision_target: the precision `recall_at_precision` must hold (default 0.9).
        positive_label: the label name of the positive class.
        calibration_bins: bins of `ece` and the calibration plot (default 10).
        loss: `binary_crossentropy` (default) or `binary_focal_crossentropy`.
        class_weight: "balanced" or label name -> weight.
    """

    type: ClassVar[str] = TaskType.BINARY
    METRICS: ClassVar[dict[str, Direction]] = {
        "roc_auc": "higher",
        "pr_auc": "higher",
        "precision": "higher",
        "recall": "higher",
        "f1": "higher",
        "recall_at_precision": "higher",
        "log_loss": "lower",
        "brier": "lower",
        "ece": "lower",
    }
    STATISTICS: ClassVar[tuple[str, ...]] = (
        "correct",
        "true_positives",
        "false_positives",
        "false_negatives",
    )
    SUMMARY: ClassVar[dict[str, Direction]] = {
        "accuracy": "higher",
        "precision": "higher",
        "recall": "higher",
        "f1": "higher",
    }
    LOSSES: ClassVar[tuple[str, ...]] = ("binary_crossentropy", "binary_focal_crossentropy")
    score_output: ClassVar[str] = "probability"

    threshold: float = 0.5
    precision_target: float = 0.9
    positive_label: str | None = None
    calibration_bins: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("threshold", self.threshold)
        check_fraction("precision_target", self.precision_target, closed=True)
        bins = self.calibration_bins
        if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= 1000:
            raise ConfigError(f"task.calibration_bins={bins!r}: expected an integer 2-1000")
        if self.positive_label is not None and not isinstance(self.positive_label, str):
            raise ConfigError(
                f"task.positive_label={self.positive_label!r}: expected the label as text"
            )

    # --- labels ------------------------------------------------------------------------------

    def infer_label_names(self, raw: Any) -> tuple[str, ...]:
        """(negative, positive)."""
        names = _labels.ordered(_labels.scalar_keys(raw, self.type))
        if len(names) != 2:
            hint = (
                "set task.type: classification for more than two classes"
                if len(names) > 2
                else "the binary task needs examples of both classes"
            )
            raise DataError(
                f"the binary task needs exactly 2 classes; the labels hold {len(names)}: "
                f"{list(names)[:20]}",
                hint=hint,
            )
        if self.positive_label is None:
            return names
        if self.positive_label not in names:
            raise DataError(
                f"task.positive_label={self.positive_label!r} is not among the labels {list(names)}"
            )
        (negative,) = (n for n in names if n != self.positive_label)
        return (negative, self.positive_label)

    def encode_labels(self, raw: Any, label_names: Sequence[str]) -> np.ndarray:
        """float32 [n, 1]: 1.0 where the label is `label_names[1]` (the positive class)."""
        if len(label_names) != 2:
            raise DataError(
                f"the binary task needs 2 label names (negative, positive); "
                f"received {list(label_names)[:20]}"
            )
        ids = _labels.index_of(_labels.scalar_keys(raw, self.type), label_names, self.type)
        return ids.astype(np.float32).reshape(-1, 1)

    def stratify_key(self, y: np.ndarray) -> np.ndarray | None:
        return self._class_ids(y)

    def output_width(self, label_names: Sequence[str]) -> int:
        return 1

    def _class_ids(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y).reshape(-1) > 0.5).astype(np.int64)

    # --- training ----------------------------------------------------------------------------

    def keras_loss(self) -> keras.losses.Loss:
        import keras

        if (self.loss or self.LOSSES[0]) == "binary_focal_crossentropy":
            return keras.losses.BinaryFocalCrossentropy(from_logits=True, reduction=None)
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)

    def _tf_class_ids(self, y: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        return tf.cast(tf.reshape(y, [-1]) > 0.5, tf.int32)

    def step_statistics(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        pred = tf.reshape(tf.sigmoid(tf.cast(logits, tf.float32)), [-1]) >= self.threshold
        true = tf.reshape(y, [-1]) > 0.5

        def count(mask: tf.Tensor) -> tf.Tensor:
            return tf.reduce_sum(tf.cast(mask, tf.float32))

        return tf.stack(
            [
                count(tf.equal(pred, true)),
                count(pred & true),
                count(pred & ~true),
                count(~pred & true),
            ]
        )

    def summarize(self, sums: Sequence[float], count: float) -> dict[str, float]:
        """Training summaries; a 0/0 ratio is 0.0 here, so a best-checkpoint comparison
        always has a number."""
        correct, tp, fp, fn = (float(v) for v in sums)
        return {
            "accuracy": correct / max(float(count), 1.0),
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        }

    # --- serving -----------------------------------------------------------------------------

    def serving_outputs(self, logits: tf.Tensor, label_names: Sequence[str]) -> dict[str, Any]:
        """`probability` float32 [n] (of the positive class), `class_id` int64 [n] (1 when
        probability >= threshold)."""
        import tensorflow as tf

        prob = tf.reshape(tf.sigmoid(tf.cast(logits, tf.float32)), [-1])
        return {"probability": prob, "class_id": tf.cast(prob >= self.threshold, tf.int64)}

    def example_methods(self, label_names: Sequence[str]) -> tuple[str, ...]:
        return ("classify", "regress")

    def example_outputs(
        self, method: str, logits: tf.Tensor, label_names: Sequence[str]
    ) -> dict[str, Any]:
        """classify: `scores` [n, 2] (negative, positive) and `classes` [n, 2] (their names);
        regress: `outputs` [n], the positive probability."""
        import tensorflow as tf

        prob = tf.reshape(tf.sigmoid(tf.cast(logits, tf.float32)), [-1])
        if method == "regress":
            return {"outputs": prob}
        if method != "classify":
            return super().example_outputs(method, logits, label_names)
        names = tf.constant([list(label_names)])
        return {
            "scores": tf.stack([1.0 - prob, prob], axis=1),
            "classes": tf.tile(names, [tf.shape(prob)[0], 1]),
        }

    def scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits).reshape(-1)

    # --- evaluation --------------------------------------------------------------------------

    def _metrics(self, y: np.ndarray, p: np.ndarray, notes: dict[str, str]) -> dict:
        from sklearn.metrics import (
            average_precision_score,
            brier_score_loss,
            log_loss,
            precision_recall_fscore_support,
            roc_auc_score,
        )

        y = self._class_ids(y)
        p = p.reshape(-1)
        positives, negatives = int(y.sum()), int(len(y) - y.sum())
        values: dict[str, float] = {}
        if positives and negatives:
            values["roc_auc"] = float(quiet(roc_auc_score, y, p))
        else:
            values["roc_auc"] = NAN
            notes["roc_auc"] = (
                f"only one class present ({positives} positive, {negatives} negative)"
            )
        if positives:
            values["pr_auc"] = float(quiet(average_precision_score, y, p))
        else:
            values["pr_auc"] = NAN
            notes["pr_auc"] = "no positive example"
        pred = (p >= self.threshold).astype(np.int64)
        prec, rec, f1, _ = quiet(
            precision_recall_fscore_support,
            y,
            pred,
            labels=[1],
            average="binary",
            zero_division=np.nan,
        )
        values["precision"] = defined(
            prec, notes, "precision", f"nothing predicted positive at threshold {self.threshold}"
        )
        values["recall"] = defined(rec, notes, "recall", "no positive example")
        values["f1"] = defined(f1, notes, "f1", "no positive example and none predicted")
        rap, _ = recall_at_precision(y, p, self.precision_target)
        values["recall_at_precision"] = defined(
            rap, notes, "recall_at_precision", "no positive example"
        )
        values["log_loss"] = float(quiet(log_loss, y, p, labels=[0, 1]))
        values["brier"] = float(quiet(brier_score_loss, y, p, labels=[0, 1]))
        values["ece"] = expected_calibration_error(y, p, self.calibration_bins)
        return values

    def breakdown(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str]
    ) -> dict[str, Any]:
        """`confusion` [[tn, fp], [fn, tp]] at `threshold`, and the threshold that gives
        `recall_at_precision` (None when no threshold reaches `precision_target`)."""
        from sklearn.metrics import confusion_matrix

        y = self._class_ids(y_true)
        p = self.scores(outputs, label_names).reshape(-1)
        pred = (p >= self.threshold).astype(np.int64)
        _, at = recall_at_precision(y, p, self.precision_target) if len(y) else (NAN, None)
        return {
            "positive_label": label_names[1],
            "threshold": self.threshold,
            "confusion": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
            "precision_target": self.precision_target,
            "threshold_at_precision_target": at,
        }

    def report_plots(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str]
    ) -> list[PlotSpec]:
        """ROC and precision-recall curves (when both classes are present) and a calibration
        plot (fraction of positives against mean probability, per bin)."""
        from sklearn.calibration import calibration_curve
        from sklearn.metrics import precision_recall_curve, roc_curve

        y = self._class_ids(y_true)
        p = self.scores(outputs, label_names).reshape(-1)
        plots: list[PlotSpec] = []
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, p)
            precision, recall, _ = precision_recall_curve(y, p)
            plots += [
                PlotSpec(
                    "roc",
                    "curve",
                    "ROC curve (test split)",
                    "false positive rate",
                    "true positive rate",
                    {"model": thin(fpr, tpr)},
                    reference="diagonal",
                ),
                PlotSpec(
                    "pr",
                    "curve",
                    f"Precision-recall (positive: {label_names[1]})",
                    "recall",
                    "precision",
                    {"model": thin(recall[::-1], precision[::-1])},
                ),
            ]
        if len(y):
            frac, mean = calibration_curve(y, p, n_bins=self.calibration_bins)
            plots.append(
                PlotSpec(
                    "calibration",
                    "curve",
                    "Calibration (test split)",
                    "mean predicted probability",
                    "fraction of positives",
                    {"model": thin(mean, frac)},
                    reference="diagonal",
                )
            )
        return plots
