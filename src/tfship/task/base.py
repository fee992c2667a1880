"""`Task`: what every stage asks about the learning problem instead of assuming one.

A task owns, for its kind of label: how raw labels are encoded (and whether the split can be
stratified), the output head and the loss, the per-example sums the training loop all-reduces
and the summary metrics made from them, the serving outputs, the evaluation metrics with their
direction (the gate's vocabulary) and the report plots. Like a KerasHub `Task` it carries its
own defaults; the options in `pipeline.yaml`'s `task:` section are its dataclass fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from tfship.errors import ConfigError, ModelError
from tfship.task.labels import label_key

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from tfship.task.plots import PlotSpec

Direction = Literal["higher", "lower"]

#: Latency of the exported model, measured by the evaluate stage for every task.
LATENCY_METRICS: dict[str, Direction] = {
    "p50_latency_ms": "lower",
    "p95_latency_ms": "lower",
    "p50_latency_ms_batch32": "lower",
    "p95_latency_ms_batch32": "lower",
}

#: The single input of the tf.Example endpoints TF Serving's :classify and :regress call.
EXAMPLE_INPUT = "inputs"


class TaskType(StrEnum):
    """The built-in learning problems (`task.type` in pipeline.yaml)."""

    CLASSIFICATION = "classification"  # one label out of N (the default)
    BINARY = "binary"  # one probability
    MULTILABEL = "multilabel"  # N independent probabilities
    REGRESSION = "regression"  # one or more real values


@dataclass(frozen=True)
class MetricResult:
    """A task's metrics on some examples, and why any of them is NaN (or needs a caveat)."""

    values: dict[str, float]
    notes: dict[str, str] = dataclasses.field(default_factory=dict)


def check_fraction(name: str, value: Any, *, closed: bool = False) -> None:
    """ConfigError unless task option `name` is a number in (0, 1) ([0, 1] if `closed`)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (0.0 <= value <= 1.0 if closed else 0.0 < value < 1.0)
    if not ok:
        bounds = "0 <= x <= 1" if closed else "0 < x < 1"
        raise ConfigError(f"task.{name}={value!r}: expected a number with {bounds}")


@dataclass(frozen=True, kw_only=True)
class Task:
    """Base class of a learning problem. Subclass one of the built-ins, or this, for your own.

    A user task is named in `pipeline.yaml` as `task.type: my_package.tasks:MyTask`; its
    dataclass fields are the options accepted under `task:`. A subclass sets the class
    attributes below and implements the methods that raise `NotImplementedError`; a
    `__post_init__` must call `super().__post_init__()`.

    Class attributes:
        type: the task's name (`TaskType` for built-ins), recorded in manifests.
        METRICS: evaluation metric name -> "higher" | "lower" (which direction is better).
        STATISTICS: names of the per-batch sums `step_statistics` returns, in order.
        SUMMARY: names (-> direction) of the metrics `summarize` makes from those sums;
            training records them as `<name>` and `val_<name>` next to `loss` / `val_loss`.
        LOSSES: loss names accepted by the `loss` option; the first is the default.
        default_best_metric: the training metric that picks the exported checkpoint.
        score_output: the serving output that `evaluate` reads.

    Args:
        loss: one of `LOSSES`; default: the first.
        class_weight: `"balanced"` or label name -> weight (labels left out weigh 1.0);
            applied to the training loss only, never to validation or evaluation.
    """

    type: ClassVar[str] = ""
    METRICS: ClassVar[Mapping[str, Direction]] = {}
    STATISTICS: ClassVar[tuple[str, ...]] = ()
    SUMMARY: ClassVar[Mapping[str, Direction]] = {}
    LOSSES: ClassVar[tuple[str, ...]] = ()
    default_best_metric: ClassVar[str] = "val_loss"
    score_output: ClassVar[str] = ""

    loss: str | None = None
    class_weight: str | dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.loss is not None and self.loss not in self.LOSSES:
            raise ConfigError(
                f"task.loss={self.loss!r} is not a loss of the {self.type} task; "
                f"expected one of {list(self.LOSSES)}"
            )
        weights = self.class_weight
        if isinstance(weights, str) and weights != "balanced":
            raise ConfigError(
                f"task.class_weight={weights!r}: expected 'balanced' or a mapping label -> weight"
            )
        if isinstance(weights, Mapping):
            bad = {
                k: v
                for k, v in weights.items()
                if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0
            }
            if bad:
                raise ConfigError(
                    f"task.class_weight: weights must be positive numbers; received {bad}"
                )
            # Label names are text (3 and "3" are one label), so the keys are too.
            keyed = {label_key(k): float(v) for k, v in weights.items()}
            object.__setattr__(self, "class_weight", keyed)
        elif weights is not None and not isinstance(weights, str):
            raise ConfigError(
                f"task.class_weight={weights!r}: expected 'balanced' or a mapping label -> weight"
            )

    # --- vocabulary (no TensorFlow) --------------------------------------------------------

    def metric_directions(self) -> dict[str, Direction]:
        """The gate's vocabulary: every evaluation metric and latency, with its direction."""
        return {**self.METRICS, **LATENCY_METRICS}

    def training_metric_directions(self) -> dict[str, Direction]:
        """What training records each epoch (`checkpoint.best_metric` must be one of these)."""
        base: dict[str, Direction] = {"loss": "lower", **self.SUMMARY}
        return {**base, **{f"val_{k}": v for k, v in base.items()}}

    def check_metric_names(self, names: Any, where: str) -> None:
        """Raise ConfigError naming every name in `names` the gate could not read."""
        known = self.metric_directions()
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ConfigError(
                f"{where}: unknown metric(s) {unknown} for task.type {self.type}; "
                f"expected one of {sorted(known)}"
            )

    def best_mode(self, metric: str) -> Literal["max", "min"]:
        """`checkpoint.best_mode` for a training metric; ConfigError when training lacks it."""
        known = self.training_metric_directions()
        if metric not in known:
            raise ConfigError(
                f"checkpoint.best_metric={metric!r} is not a metric training records for "
                f"task.type {self.type}; expected one of {sorted(known)}"
            )
        return "max" if known[metric] == "higher" else "min"

    def describe(self) -> dict[str, Any]:
        """What identifies this task in a manifest or the checkpoint guard (changes results)."""
        cls = type(self)
        return {
            "type": str(self.type),
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "options": dataclasses.asdict(self),
        }

    # --- labels ------------------------------------------------------------------------------

    def infer_label_names(self, raw: Any) -> tuple[str, ...]:
        """The label names found in `raw` labels, in the order that fixes their ids."""
        raise NotImplementedError

    def encode_labels(self, raw: Any, label_names: Sequence[str]) -> np.ndarray:
        """`raw` labels as the array training and `evaluate` take; DataError names bad rows."""
        raise NotImplementedError

    def encode(
        self, raw: Any, label_names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """(encoded labels, label names): names inferred from `raw` unless given."""
        names = tuple(label_names) if label_names is not None else self.infer_label_names(raw)
        return self.encode_labels(raw, names), names

    def empty_label_is_a_value(self) -> bool:
        """True when an empty label ("") is a real value (no labels at all), not a missing one."""
        return False

    def stratify_key(self, y: np.ndarray) -> np.ndarray | None:
        """One class per example for a stratified split, or None when that does not apply."""
        return None

    def output_width(self, label_names: Sequence[str]) -> int:
        """How many logits the model must return per example."""
        return len(label_names)

    def class_weights(self, y_train: np.ndarray, label_names: Sequence[str]) -> np.ndarray | None:
        """`class_weight` resolved to one weight per label name (None: unweighted).

        "balanced" weighs label i by n / (labels * count_i), scikit-learn's definition; a
        label absent from `y_train` weighs 1.0.
        """
        if self.class_weight is None:
            return None
        names = list(label_names)
        if isinstance(self.class_weight, Mapping):
            unknown = sorted(set(self.class_weight) - set(names))
            if unknown:
                raise ConfigError(
                    f"task.class_weight names {unknown}, which are not labels of the data; "
                    f"labels: {names[:20]}"
                )
            return np.asarray([float(self.class_weight.get(n, 1.0)) for n in names])
        from sklearn.utils.class_weight import compute_class_weight

        ids = self._class_ids(y_train)
        present = np.unique(ids)
        weights = np.ones(len(names))
        weights[present] = compute_class_weight("balanced", classes=present, y=ids)
        return weights

    def _class_ids(self, y: np.ndarray) -> np.ndarray:
        raise ConfigError(f"task.class_weight does not apply to the {self.type} task")

    # --- model and training (TensorFlow, imported lazily) -------------------------------------

    def head(self, label_names: Sequence[str], *, name: str = "logits") -> keras.layers.Layer:
        """The output layer a model builder may end with: linear, `output_width` units,
        float32 even under mixed precision (the loss and serving outputs read it)."""
        import keras

        return keras.layers.Dense(self.output_width(label_names), dtype="float32", name=name)

    def keras_loss(self) -> keras.losses.Loss:
        """The Keras loss on logits, one value per example (`reduction=None`)."""
        raise NotImplementedError

    def per_example_loss(
        self, y: tf.Tensor, logits: tf.Tensor, class_weights: np.ndarray | None = None
    ) -> tf.Tensor:
        """Loss per example, weighted by `class_weights` (from `class_weights()`) if given.

        The training step passes the result to `tf.nn.compute_average_loss`; validation
        passes no weights, like Keras' `class_weight`.
        """
        import tensorflow as tf

        loss = self.keras_loss()(y, tf.cast(logits, tf.float32))
        if class_weights is None:
            return loss
        table = tf.constant(class_weights, dtype=tf.float32)
        return loss * tf.gather(table, self._tf_class_ids(y))

    def _tf_class_ids(self, y: tf.Tensor) -> tf.Tensor:
        raise ConfigError(f"task.class_weight does not apply to the {self.type} task")

    def step_statistics(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """float32 [len(STATISTICS)]: sums over the batch, all-reduced (SUM) by the loop."""
        raise NotImplementedError

    def summarize(self, sums: Sequence[float], count: float) -> dict[str, float]:
        """The `SUMMARY` metrics from summed `step_statistics` over `count` examples."""
        raise NotImplementedError

    # --- serving -----------------------------------------------------------------------------

    def serving_outputs(self, logits: tf.Tensor, label_names: Sequence[str]) -> dict[str, Any]:
        """The named outputs of the `serving_default` signature, from the model's logits."""
        raise NotImplementedError

    def example_methods(self, label_names: Sequence[str]) -> tuple[str, ...]:
        """TF Serving methods answered from serialized tf.Example (`classify`, `regress`).

        Each gets an endpoint of that name taking one DT_STRING tensor named `inputs`.
        """
        return ()

    def example_outputs(
        self, method: str, logits: tf.Tensor, label_names: Sequence[str]
    ) -> dict[str, Any]:
        """The outputs of the `method` endpoint: `scores` and `classes` (classify) or
        `outputs` (regress), the names TF Serving's handlers look for."""
        raise ValueError(f"the {self.type} task has no {method!r} endpoint")

    def scores_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """What `serving_outputs[score_output]` holds, computed with NumPy (for tests and
        in-memory evaluation)."""
        raise NotImplementedError

    # --- evaluation --------------------------------------------------------------------------

    def evaluate(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str] | None = None
    ) -> dict[str, float]:
        """Exactly the `METRICS` names -> values on these examples (NaN where undefined)."""
        return self.measure(y_true, outputs, label_names).values

    def measure(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str] | None = None
    ) -> MetricResult:
        """`evaluate` with the reason for every NaN.

        Args:
            y_true: labels as `encode_labels` returned them.
            outputs: the serving outputs (a mapping; `score_output` is read) or that array.
            label_names: when given, the outputs' width is checked against them.
        """
        y = np.asarray(y_true)
        scores = self.scores(outputs, label_names)
        if len(y) != len(scores):
            raise ModelError(f"{len(scores)} model outputs for {len(y)} labels")
        if not len(y):
            nan = float("nan")
            return MetricResult(
                {k: nan for k in self.METRICS}, {k: "no examples" for k in self.METRICS}
            )
        notes: dict[str, str] = {}
        values = {k: float(v) for k, v in self._metrics(y, scores, notes).items()}
        if set(values) != set(self.METRICS):
            raise ConfigError(
                f"{type(self).__qualname__} computed metrics {sorted(values)}; its METRICS "
                f"promise {sorted(self.METRICS)}",
                hint="a task's _metrics must return exactly the names in its METRICS",
            )
        for name, value in values.items():
            if math.isnan(value):
                notes.setdefault(name, "undefined on these examples")
        return MetricResult(values, notes)

    def scores(self, outputs: Any, label_names: Sequence[str] | None = None) -> np.ndarray:
        """The `score_output` array out of the serving outputs, checked to be finite."""
        if isinstance(outputs, Mapping):
            if self.score_output not in outputs:
                raise ModelError(
                    f"the model's outputs {sorted(outputs)} lack {self.score_output!r}, which "
                    f"the {self.type} task evaluates",
                    hint="export with the same task.type the model was trained for",
                )
            outputs = outputs[self.score_output]
        scores = np.asarray(outputs, dtype=np.float64)
        if scores.size and not np.isfinite(scores).all():
            raise ModelError(f"the model's {self.score_output!r} holds NaN or infinite values")
        if label_names is not None:
            width = 1 if scores.ndim < 2 else scores.shape[-1]
            if width != self.output_width(label_names):
                raise ModelError(
                    f"the model returns {width} value(s) per example in "
                    f"{self.score_output!r}; the {self.type} task with labels "
                    f"{list(label_names)[:20]} expects {self.output_width(label_names)}"
                )
        return scores

    def _metrics(self, y: np.ndarray, scores: np.ndarray, notes: dict[str, str]) -> dict:
        raise NotImplementedError

    def breakdown(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str]
    ) -> dict[str, Any]:
        """Detail for metrics.json and the report (per class, confusion, ...); JSON-able."""
        return {}

    def report_plots(
        self, y_true: np.ndarray, outputs: Any, label_names: Sequence[str]
    ) -> list[PlotSpec]:
        """The task's evaluation plots as specs (`tfship.task.plots.render_png` draws one)."""
        return []
