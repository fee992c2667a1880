"""`MultilabelTask`: N independent probabilities (sigmoid over N logits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfship.errors import ConfigError, DataError
from tfship.task import labels as _labels
from tfship.task.base import Direction, Task, TaskType, check_fraction
from tfship.task.metrics import defined, quiet, sigmoid
from tfship.task.plots import PlotSpec

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


@dataclass(frozen=True, kw_only=True)
class MultilabelTask(Task):
    """Any number of N labels per example: sigmoid over N logits, binary cross-entropy each.

    Raw labels, one entry per example:
        - a list, tuple or set of label values (`["cat", "dog"]`, `[]` for none);
        - a single value, taken as one label; with `separator` set, a string is split on it
          (`"cat|dog"`);
        - or, for the whole data, a 2-D NumPy array of 0/1 (multi-hot), whose label names
          are its column numbers unless given.
    A Python list of lists is always read as label values, never as multi-hot rows.
    Encoded labels are float32 multi-hot [n, N]. Splits are not stratified.

    Metrics (evaluation, a label is predicted when its probability is >= `threshold`):
        micro_f1: F1 over all (example, label) decisions pooled.
        macro_f1: mean of the per-label F1; labels with no positive example and none
            predicted are left out (scikit-learn's `zero_division=nan`).
        subset_accuracy: fraction of examples whose predicted label set is exactly right.
        hamming_loss: fraction of (example, label) decisions that are wrong.

    Args:
        threshold: probability at or above which a label is predicted (default 0.5).
        separator: splits string labels into several (default: none, a string is one label).
        loss: `binary_crossentropy` (default) or `binary_focal_crossentropy`.
        class_weight: "balanced" (each label's positives weigh negatives/positives) or
            label name -> weight of its positive examples; binary_crossentropy only.
    """

    type: ClassVar[str] = TaskType.MULTILABEL
    METRICS: ClassVar[dict[str, Direction]] = {
        "micro_f1": "higher",
        "macro_f1": "higher",
        "subset_accuracy": "higher",
        "hamming_loss": "lower",
    }
    STATISTICS: ClassVar[tuple[str, ...]] = (
        "exact_matches",
        "true_positives",
        "false_positives",
        "false_negatives",
        "wrong_decisions",
        "decisions",
    )
    SUMMARY: ClassVar[dict[str, Direction]] = {
        "subset_accuracy": "higher",
        "micro_f1": "higher",
        "hamming_loss": "lower",
    }
    LOSSES: ClassVar[tuple[str, ...]] = ("binary_crossentropy", "binary_focal_crossentropy")
    score_output: ClassVar[str] = "probabilities"

    threshold: float = 0.5
    separator: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("threshold", self.threshold)
        if self.separator is not None and (
            not isinstance(self.separator, str) or not self.separator
        ):
            raise ConfigError(f"task.separator={self.separator!r}: expected a non-empty string")
        if self.class_weight is not None and self.loss == "binary_focal_crossentropy":
            raise ConfigError(
                "task.class_weight weighs the positive term of binary_crossentropy; "
                "binary_focal_crossentropy balances classes itself",
                hint="drop task.class_weight, or use loss: binary_crossentropy",
            )

    # --- labels ------------------------------------------------------------------------------

    def infer_label_names(self, raw: Any) -> tuple[str, ...]:
        if _is_multi_hot(raw):
            names = tuple(str(j) for j in range(_multi_hot(raw).shape[1]))
        else:
            names = _labels.ordered(k for row in self._label_sets(raw) for k in row)
        if len(names) < 2:
            raise DataError(
                f"the labels hold {len(names)} distinct label(s) {list(names)}; multilabel "
                f"needs at least 2",
                hint="for one yes/no label set task.type: binary",
            )
        return names

    def encode_labels(self, raw: Any, label_names: Sequence[str]) -> np.ndarray:
        """float32 multi-hot [n, len(label_names)]."""
        if _is_multi_hot(raw):
            hot = _multi_hot(raw)
            if hot.shape[1] != len(label_names):
                raise DataError(
                    f"multi-hot labels have {hot.shape[1]} columns; expected one per label "
                    f"name ({len(label_names)})"
                )
            return hot
        sets = self._label_sets(raw)
        flat = [k for row in sets for k in row]
        ids = _labels.index_of(flat, label_names, self.type)
        out = np.zeros((len(sets), len(label_names)), dtype=np.float32)
        rows = np.repeat(np.arange(len(sets)), [len(row) for row in sets])
        out[rows, ids] = 1.0
        return out

    def empty_label_is_a_value(self) -> bool:
        # "a|b" in a table cell: an empty cell is the empty set, the example has no labels (a
        # CSV cannot tell an empty set from a missing value; a table of label sets means this).
        return self.separator is not None

    def _label_sets(self, raw: Any) -> list[list[str]]:
        rows = _labels.as_rows(raw)
        if self.separator is not None:
            rows = [[] if _labels.is_missing(v) else v for v in rows]
        missing = [i for i, v in enumerate(rows) if _labels.is_missing(v)]
        nested = [
            i
            for i, v in enumerate(rows)
            if _labels.is_collection(v)
            and any(_labels.is_collection(x) or _labels.is_missing(x) for x in v)
        ]
        if missing or nested:
            bad = missing or nested
            what = "no labels (give [] for none)" if missing else "nested or missing values"
            raise DataError(
                f"{len(bad)} multilabel label entries hold {what} ({_labels.rows_text(bad)})"
            )
        return [self._keys(v) for v in rows]

    def _keys(self, value: Any) -> list[str]:
        if _labels.is_collection(value):
            return sorted({_labels.label_key(v) for v in value})
        key = _labels.label_key(value)
        if self.separator is not None and isinstance(value, str | bytes | np.str_ | np.bytes_):
            return sorted({part for part in key.split(self.separator) if part})
        return [key]

    def class_weights(self, y_train: np.ndarray, label_names: Sequence[str]) -> np.ndarray | None:
        """Weights of each label's positive examples ("balanced": negatives / positives, 1.0
        for a label never positive)."""
        if self.class_weight is None or isinstance(self.class_weight, Mapping):
            return super().class_weights(y_train, label_names)
        y = np.asarray(y_train, dtype=np.float64)
        positives = y.sum(axis=0)
        negatives = len(y) - positives
        return np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)

    # --- training ----------------------------------------------------------------------------

    def keras_loss(self) -> keras.losses.Loss:
        import keras

        if (self.loss or self.LOSSES[0]) == "binary_focal_crossentropy":
            return keras.losses.BinaryFocalCrossentropy(from_logits=True, reduction=None)
        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)

    def per_example_loss(
        self, y: tf.Tensor, logits: tf.Tensor, class_weights: np.ndarray | None = None
    ) -> tf.Tensor:
        import tensorflow as tf

        if class_weights is None:
            return super().per_example_loss(y, logits)
        per_label = tf.nn.weighted_cross_entropy_with_logits(
            labels=tf.cast(y, tf.float32),
            logits=tf.cast(logits, tf.float32),
            pos_weight=tf.constant(class_weights, dtype=tf.float32),
        )
        return tf.reduce_mean(per_label, axis=-1)

    def step_statistics(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        pred = tf.sigmoid(tf.cast(logits, tf.float32)) >= self.threshold
        true = tf.cast(y, tf.float32) > 0.5

        def count(mask: tf.Tensor) -> tf.Tensor:
            return tf.reduce_sum(tf.cast(mask, tf.float32))

        return tf.stack(
            [
                count(tf.reduce_all(tf.equal(pred, true), axis=-1)),
                count(pred & true),
                count(pred & ~true),
                count(~pred & true),
                count(tf.not_equal(pred, true)),
                tf.cast(tf.size(pred), tf.float32),
            ]
        )

    def summarize(self, sums: Sequence[float], count: float) -> dict[str, float]:
        exact, tp, fp, fn, wrong, decisions = (float(v) for v in sums)
        return {
            "subset_accuracy": exact / max(float(count), 1.0),
            "micro_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "hamming_loss": wrong / max(decisions, 1.0),
        }

    # --- serving -----------------------------------------------------------------------------

    def serving_outputs(self, logits: tf.Tensor, label_names: Sequence[str]) -> dict[str, Any]:
        """`probabilities` float32 [n, N]; `labels` string [n, N]: the label's name where its
        probability is >= threshold, "" elsewhere (a signature cannot return ragged lists)."""
        import tensorflow as tf

        probs = tf.sigmoid(tf.cast(logits, tf.float32))
        names = tf.broadcast_to(tf.constant([list(label_names)]), tf.shape(probs))
        return {
            "probabilities": probs,
            "labels": tf.where(probs >= self.threshold, names, tf.constant("")),
        }

    def scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits)

    # --- evaluation --------------------------------------------------------------------------

    def _metrics(self, y: np.ndarray, probs: np.ndarray, notes: dict[str, str]) -> dict:
        from sklearn.metrics import accuracy_score, f1_score, hamming_loss

        true = (np.asarray(y) > 0.5).astype(np.int64)
        pred = (probs >= self.threshold).astype(np.int64)
        empty = "no label in the examples and none predicted"
        return {
            "micro_f1": defined(
                quiet(f1_score, true, pred, average="micro", zero_division=np.nan),
                notes,
                "micro_f1",
                empty,
            ),
            "macro_f1": defined(
                quiet(f1_score, true, pred, average="macro", zero_division=np.nan),
                notes,
                "macro_f1",
                empty,
            ),
            "subset_accuracy": float(accuracy_score(true, pred)),
            "hamming_loss": float(hamming_loss(true, pred)),
        }

    def breakdown(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str]
    ) -> dict[str, Any]:
        """`per_label`: name -> precision, recall, f1 (0 where undefined), support."""
        from sklearn.metrics import precision_recall_fscore_support

        probs = self.scores(outputs, label_names)
        true = (np.asarray(y_true) > 0.5).astype(np.int64).reshape(len(probs), -1)
        pred = (probs >= self.threshold).astype(np.int64)
        if not len(true):
            return {"per_label": {}, "threshold": self.threshold}
        prec, rec, f1, support = quiet(
            precision_recall_fscore_support, true, pred, average=None, zero_division=0
        )
        per_label = {
            name: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        }
        return {"per_label": per_label, "threshold": self.threshold}

    def report_plots(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str]
    ) -> list[PlotSpec]:
        """F1 per label, as bars."""
        per_label = self.breakdown(y_true, outputs, label_names)["per_label"]
        if not per_label:
            return []
        f1 = [v["f1"] for v in per_label.values()]
        return [
            PlotSpec(
                "label_f1",
                "bars",
                f"F1 per label at threshold {self.threshold}",
                "label",
                "F1",
                {"f1": ([float(i) for i in range(len(f1))], f1)},
                ticks=tuple(per_label),
            )
        ]


def _is_multi_hot(raw: Any) -> bool:
    return isinstance(raw, np.ndarray) and raw.ndim == 2 and raw.dtype.kind in "biuf"


def _multi_hot(raw: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero(~np.isin(raw, (0, 1)).all(axis=1))
    if len(bad):
        raise DataError(
            f"multi-hot labels must be 0 or 1; {_labels.rows_text(list(bad))} hold other values "
            f"(first: {raw[bad[0]].tolist()[:10]})"
        )
    return raw.astype(np.float32)
