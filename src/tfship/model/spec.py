"""`ModelSpec`: everything a model builder is handed (TFX's "fn_args", as one typed record)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tfship.data.schema import Kind, Schema

if TYPE_CHECKING:
    import keras

    from tfship.task import Task

#: Training rows handed to a builder for `adapt()` / vocabularies: enough for stable statistics,
#: small enough to hold twice (the live and the host copy of the model are built from it).
SAMPLE_ROWS = 10_000


@dataclass(frozen=True)
class ModelSpec:
    """What a `model.builder` receives: `builder(spec, **model.options) -> keras.Model`.

    The model takes the raw features by name (`spec.inputs()`) and returns logits of width
    `spec.output_width` (`spec.head()`); preprocessing (Normalization, StringLookup,
    TextVectorization, Rescaling ...) belongs inside it, fitted on `spec.sample`, so the
    SavedModel takes raw values. The sample is the first rows of the training split, the same
    on every rebuild of the same run (export rebuilds the model before loading its weights), so
    whatever is fitted on it (vocabularies) is the same too.
    """

    schema: Schema
    task: Task
    label_names: tuple[str, ...]
    sample: Mapping[str, np.ndarray] = field(repr=False)
    sample_labels: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_splits(cls, task: Task, splits: Any, rows: int = SAMPLE_ROWS) -> ModelSpec:
        n = min(rows, len(splits.y_train))
        return cls(
            splits.schema,
            task,
            tuple(splits.label_names),
            {k: v[:n] for k, v in splits.x_train.items()},
            splits.y_train[:n],
        )

    @classmethod
    def image(
        cls, input_shape: tuple[int, ...], num_classes: int, name: str = "pixels"
    ) -> ModelSpec:
        """The spec of a `num_classes`-way classifier of one raw image (no sample)."""
        from tfship.data.schema import Feature
        from tfship.task import ClassificationTask

        feature = Feature(name, Kind.IMAGE, "float32", tuple(int(d) for d in input_shape))
        labels = tuple(str(i) for i in range(num_classes))
        empty = {name: np.zeros((0, *feature.shape), np.float32)}
        return cls(Schema((feature,), "label"), ClassificationTask(), labels, empty)

    @property
    def output_width(self) -> int:
        """Logits per example the model must return."""
        return self.task.output_width(self.label_names)

    @property
    def num_classes(self) -> int:
        """The legacy builders' second argument: the output width."""
        return self.output_width

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The image shape when the model takes one image (the legacy builder form)."""
        image = self.schema.single_image
        return image.shape if image is not None else None

    def inputs(self) -> dict[str, keras.KerasTensor]:
        """One `keras.Input` per feature, named and typed as the serving signature will be."""
        import keras

        return {
            f.name: keras.Input(shape=f.shape, dtype=f.dtype, name=f.name)
            for f in self.schema.features
        }

    def head(self, name: str = "logits") -> keras.layers.Layer:
        """The task's output layer (float32 logits of `output_width` units)."""
        return self.task.head(self.label_names, name=name)

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self.sample[name])

    def kinds(self) -> dict[str, Kind]:
        return {f.name: f.kind for f in self.schema.features}
