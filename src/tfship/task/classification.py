"""`ClassificationTask`: one label out of N (softmax over N logits). The default task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tfship.errors import ConfigError, DataError, ModelError
from tfship.task import labels as _labels
from tfship.task.base import Direction, Task, TaskType
from tfship.task.metrics import quiet, softmax
from tfship.task.plots import PlotSpec

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

_EPS = 1e-7  # probabilities are clipped here for the loss, as tfship always has


@dataclass(frozen=True, kw_only=True)
class ClassificationTask(Task):
    """One label out of N: softmax over N logits, sparse categorical cross-entropy.

    Labels are any scalars (ints, strings, bytes); label names are their text, integers in
    numeric order, then text in alphabetical order, and a label's id is its position.

    Metrics (evaluation, from the served probabilities):
        accuracy: fraction whose most probable class is the label.
        macro_f1: mean F1 over all N classes (a class absent from the examples counts 0).
        min_class_f1, min_class_recall: the worst class among those present.
        loss: mean -log p(label), p clipped to [1e-7, 1].
        top_k_accuracy: fraction whose label is among the `top_k` most probable classes
            (1.0 when `top_k` >= N, with a note).

    Args:
        top_k: k of `top_k_accuracy` (default 5, like Keras' TopKCategoricalAccuracy).
        loss: `sparse_categorical_crossentropy` (default) or `categorical_focal_crossentropy`.
        class_weight: "balanced" or class name -> weight.
    """

    type: ClassVar[str] = TaskType.CLASSIFICATION
    METRICS: ClassVar[dict[str, Direction]] = {
        "accuracy": "higher",
        "macro_f1": "higher",
        "min_class_f1": "higher",
        "min_class_recall": "higher",
        "loss": "lower",
        "top_k_accuracy": "higher",
    }
    STATISTICS: ClassVar[tuple[str, ...]] = ("correct",)
    SUMMARY: ClassVar[dict[str, Direction]] = {"accuracy": "higher"}
    LOSSES: ClassVar[tuple[str, ...]] = (
        "sparse_categorical_crossentropy",
        "categorical_focal_crossentropy",
    )
    default_best_metric: ClassVar[str] = "val_accuracy"
    score_output: ClassVar[str] = "probabilities"

    top_k: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"task.top_k={self.top_k!r}: expected an integer >= 1")

    # --- labels ------------------------------------------------------------------------------

    def infer_label_names(self, raw: Any) -> tuple[str, ...]:
        names = _labels.ordered(_labels.scalar_keys(raw, self.type))
        if len(names) < 2:
            raise DataError(
                f"the labels hold {len(names)} class(es) {list(names)}; classification needs "
                f"at least 2",
                hint="check data.path and the label column",
            )
        return names

    def encode_labels(self, raw: Any, label_names: Sequence[str]) -> np.ndarray:
        """int64 class ids [n], indexing `label_names`."""
        return _labels.index_of(_labels.scalar_keys(raw, self.type), label_names, self.type)

    def stratify_key(self, y: np.ndarray) -> np.ndarray | None:
        return np.asarray(y)

    def _class_ids(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.int64)

    # --- training ----------------------------------------------------------------------------

    def keras_loss(self) -> keras.losses.Loss:
        import keras

        if (self.loss or self.LOSSES[0]) == "categorical_focal_crossentropy":
            return _sparse_focal_loss()
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def _tf_class_ids(self, y: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        return tf.cast(tf.reshape(y, [-1]), tf.int32)

    def step_statistics(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        pred = tf.argmax(logits, axis=-1, output_type=tf.int64)
        correct = tf.equal(pred, tf.cast(tf.reshape(y, [-1]), tf.int64))
        return tf.stack([tf.reduce_sum(tf.cast(correct, tf.float32))])

    def summarize(self, sums: Sequence[float], count: float) -> dict[str, float]:
        return {"accuracy": float(sums[0]) / max(float(count), 1.0)}

    # --- serving -----------------------------------------------------------------------------

    def serving_outputs(self, logits: tf.Tensor, label_names: Sequence[str]) -> dict[str, Any]:
        """`probabilities` float32 [n, N], `class_id` int64 [n], `class_name` string [n]."""
        import tensorflow as tf

        logits = tf.cast(logits, tf.float32)
        class_id = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "class_id": class_id,
            "class_name": tf.gather(tf.constant(list(label_names)), class_id),
        }

    def example_methods(self, label_names: Sequence[str]) -> tuple[str, ...]:
        return ("classify",)

    def example_outputs(
        self, method: str, logits: tf.Tensor, label_names: Sequence[str]
    ) -> dict[str, Any]:
        """classify: `scores` float32 [n, N] and `classes` string [n, N] (the label names)."""
        import tensorflow as tf

        if method != "classify":
            return super().example_outputs(method, logits, label_names)
        scores = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        names = tf.constant([list(label_names)])
        return {"scores": scores, "classes": tf.tile(names, [tf.shape(scores)[0], 1])}

    def scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits)

    # --- evaluation --------------------------------------------------------------------------

    def _metrics(self, y: np.ndarray, probs: np.ndarray, notes: dict[str, str]) -> dict:
        from sklearn.metrics import precision_recall_fscore_support

        y = y.astype(np.int64).reshape(-1)
        n = probs.shape[1]
        if y.min() < 0 or y.max() >= n:
            raise ModelError(
                f"the model returns {n} class probabilities; the label ids reach {int(y.max())}",
                hint="evaluate with the label names the model was trained on",
            )
        pred = probs.argmax(axis=1)
        _, rec, f1, support = precision_recall_fscore_support(
            y, pred, labels=list(range(n)), zero_division=0
        )
        present = support > 0  # a class absent from the examples says nothing about the model
        picked = np.clip(probs[np.arange(len(y)), y], _EPS, 1.0)
        return {
            "accuracy": float((pred == y).mean()),
            "macro_f1": float(f1.mean()),
            "min_class_f1": float(f1[present].min()),
            "min_class_recall": float(rec[present].min()),
            "loss": float(-np.log(picked).mean()),
            "top_k_accuracy": self._top_k(y, probs, pred, notes),
        }

    def _top_k(self, y: np.ndarray, probs: np.ndarray, pred: np.ndarray, notes: dict) -> float:
        from sklearn.metrics import top_k_accuracy_score

        n = probs.shape[1]
        if self.top_k >= n:
            notes["top_k_accuracy"] = f"top_k={self.top_k} >= {n} classes: always 1.0"
            return 1.0
        if n == 2:  # then top_k is 1; scikit-learn wants one score column for two classes
            return float((pred == y).mean())
        return float(quiet(top_k_accuracy_score, y, probs, k=self.top_k, labels=list(range(n))))

    def breakdown(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str]
    ) -> dict[str, Any]:
        """`per_class` (name -> precision, recall, f1, support) and `confusion` (rows: true
        class, columns: predicted), as today's metrics.json."""
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        probs = self.scores(outputs, label_names)
        y = np.asarray(y_true, dtype=np.int64).reshape(-1)
        ids = list(range(len(label_names)))
        if not len(y):
            return {"per_class": {}, "confusion": [[0] * len(ids) for _ in ids]}
        pred = probs.argmax(axis=1)
        prec, rec, f1, support = precision_recall_fscore_support(
            y, pred, labels=ids, zero_division=0
        )
        per_class = {
            name: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        }
        return {"per_class": per_class, "confusion": confusion_matrix(y, pred, labels=ids).tolist()}

    def report_plots(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str]
    ) -> list[PlotSpec]:
        confusion = self.breakdown(y_true, outputs, label_names)["confusion"]
        return [
            PlotSpec(
                name="confusion",
                kind="matrix",
                title="Confusion matrix (test split)",
                x_label="predicted",
                y_label="true",
                matrix=confusion,
                ticks=tuple(label_names),
            )
        ]


def _sparse_focal_loss() -> keras.losses.Loss:
    import keras
    import tensorflow as tf

    class SparseCategoricalFocalCrossentropy(keras.losses.Loss):
        """Keras' categorical focal cross-entropy on class ids (it wants one-hot labels)."""

        def __init__(self) -> None:
            super().__init__(name="sparse_categorical_focal_crossentropy", reduction=None)
            self.focal = keras.losses.CategoricalFocalCrossentropy(from_logits=True, reduction=None)

        def call(self, y_true: Any, y_pred: Any) -> Any:
            ids = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
            return self.focal(tf.one_hot(ids, tf.shape(y_pred)[-1]), y_pred)

    return SparseCategoricalFocalCrossentropy()


__all__ = ["ClassificationTask"]
