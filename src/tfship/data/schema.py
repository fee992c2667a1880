"""The data schema: named features, each with a kind, a dtype and a per-example shape.

The schema replaces "raw pixels [H, W, C] + class count" everywhere a stage needs to know what
goes into the model: the data stage checks the loaded columns against it and writes it to the
run directory (`schema.json`), the model builder receives it, the checkpoint guard records it,
the export signature takes one input per feature with its dtype, and golden / warmup requests
are encoded from it. TensorFlow-free.

Kinds and their in-memory form (one NumPy array per feature, first axis = examples):

| kind          | dtype              | array                         | missing value     |
|---------------|--------------------|-------------------------------|-------------------|
| `numeric`     | float32            | [n] or [n, *shape]            | NaN               |
| `categorical` | string or int64    | [n] (object of str / int64)   | "" (string), -1   |
| `text`        | string             | [n] (object of str)           | ""                |
| `image`       | float32            | [n, H, W, C], raw values      | (not allowed)     |

Missing numeric values stay NaN in the data and reach the model, whose preprocessing decides
(the default models impute the training mean inside the model, so a served request may leave
them out too); missing strings are "" (an out-of-vocabulary value for a lookup).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from tfship.errors import DataError

SCHEMA_FORMAT = "tfship-schema/1"


class Kind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    TEXT = "text"
    IMAGE = "image"


#: dtypes a feature may have, per kind (the first is the default).
DTYPES: dict[Kind, tuple[str, ...]] = {
    Kind.NUMERIC: ("float32",),
    Kind.CATEGORICAL: ("string", "int64"),
    Kind.TEXT: ("string",),
    Kind.IMAGE: ("float32",),
}


@dataclass(frozen=True)
class Feature:
    """One model input: `name` is the Keras input name and the serving signature's key."""

    name: str
    kind: Kind
    dtype: str
    shape: tuple[int, ...] = ()  # per example: () scalar, (k,) vector, (H, W, C) image

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES[self.kind]:
            raise DataError(
                f"feature {self.name!r}: dtype {self.dtype!r} is not one a {self.kind} feature "
                f"can have; expected one of {list(DTYPES[self.kind])}"
            )
        if self.kind is Kind.IMAGE and len(self.shape) != 3:
            raise DataError(
                f"feature {self.name!r}: an image needs shape (height, width, channels); "
                f"received {list(self.shape)}"
            )
        if self.kind in (Kind.CATEGORICAL, Kind.TEXT) and self.shape:
            raise DataError(
                f"feature {self.name!r}: a {self.kind} feature holds one value per example; "
                f"received shape {list(self.shape)}"
            )

    @property
    def is_string(self) -> bool:
        return self.dtype == "string"

    @property
    def numpy_dtype(self) -> Any:
        return object if self.is_string else np.dtype(self.dtype)

    def tf_dtype(self) -> Any:
        import tensorflow as tf

        return tf.string if self.is_string else tf.as_dtype(self.dtype)

    def tensor_spec(self) -> Any:
        """The serving signature's input: batch dimension first, named like the feature."""
        import tensorflow as tf

        return tf.TensorSpec([None, *self.shape], self.tf_dtype(), name=self.name)

    def missing_value(self) -> Any:
        if self.is_string:
            return ""
        return -1 if self.dtype == "int64" else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Schema:
    """The features the model takes, in order, and the label's column name."""

    features: tuple[Feature, ...]
    label: str

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if not names:
            raise DataError("the schema has no features: the model would have no input")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"feature name(s) {dupes} appear more than once in the schema")
        if self.label in names:
            raise DataError(
                f"column {self.label!r} is both the label and a feature: the model would be "
                "given its answer",
                hint="remove it from data.features, or set data.label to the real label column",
            )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def __getitem__(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def of_kind(self, *kinds: Kind) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.kind in kinds)

    @property
    def single_image(self) -> Feature | None:
        """The feature when the model takes exactly one image (the legacy builder form)."""
        if len(self.features) == 1 and self.features[0].kind is Kind.IMAGE:
            return self.features[0]
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SCHEMA_FORMAT,
            "label": self.label,
            "features": {f.name: f.to_json() for f in self.features},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schema:
        try:
            feats = tuple(
                Feature(
                    name,
                    Kind(spec["kind"]),
                    str(spec["dtype"]),
                    tuple(int(d) for d in spec.get("shape", ())),
                )
                for name, spec in dict(data["features"]).items()
            )
            return cls(feats, str(data["label"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a tfship schema ({type(exc).__name__}: {exc})") from None

    def describe(self) -> str:
        """The `data:` keys that pin this schema, as YAML (printed after inference)."""
        lines = [f"  label: {self.label}", "  features:"]
        for f in self.features:
            shape = f", shape: {list(f.shape)}" if f.shape else ""
            lines.append(f"    {f.name}: {{kind: {f.kind.value}, dtype: {f.dtype}{shape}}}")
        return "\n".join(lines)

    def check(self, columns: Mapping[str, np.ndarray], where: str) -> None:
        """DataError naming the column, what was found and what was expected."""
        missing = [n for n in self.names if n not in columns]
        if missing:
            raise DataError(
                f"{where}: feature column(s) {missing} declared in data.features are missing; "
                f"found columns {sorted(columns)[:30]}",
                hint="fix data.features, or the data",
            )
        lengths = {n: len(columns[n]) for n in self.names}
        if len(set(lengths.values())) > 1:
            raise DataError(f"{where}: feature columns have different lengths: {lengths}")
        for f in self.features:
            check_column(f, columns[f.name], where)


def check_column(feature: Feature, values: np.ndarray, where: str) -> None:
    """DataError unless `values` is `feature`'s in-memory form (see the module table)."""
    arr = np.asarray(values)
    name, kind = feature.name, feature.kind
    want_shape = (len(arr), *feature.shape)
    if arr.shape != want_shape:
        raise DataError(
            f"{where}: column {name!r}: found values of shape {list(arr.shape[1:])} per example; "
            f"expected {list(feature.shape)} for a {kind} feature",
            hint="fix data.features (shape), or the data",
        )
    if feature.is_string:
        bad = next((v for v in arr.ravel() if not isinstance(v, str)), None)
        if bad is not None:
            raise DataError(
                f"{where}: column {name!r}: found {type(bad).__name__} value {str(bad)[:40]!r}; "
                f"expected text for a {kind} feature of dtype string"
            )
        return
    if arr.dtype.kind not in "biuf":
        sample = next(iter(arr.ravel()), None)
        raise DataError(
            f"{where}: column {name!r}: found {arr.dtype} values such as {str(sample)[:40]!r}; "
            f"expected numbers for a {kind} feature of dtype {feature.dtype}",
            hint=f"declare {name!r} as categorical or text in data.features, or fix the data",
        )
    if feature.dtype == "int64" and arr.dtype.kind == "f":
        raise DataError(
            f"{where}: column {name!r}: found fractional or missing numbers; expected integers "
            f"for a categorical feature of dtype int64"
        )
    if arr.dtype.kind == "f":
        infinite = int(np.isinf(arr).sum())
        if infinite:
            raise DataError(
                f"{where}: column {name!r}: found {infinite} infinite value(s); expected finite "
                "numbers (missing values may be empty / NaN)"
            )
        if kind is Kind.IMAGE and np.isnan(arr).any():
            raise DataError(f"{where}: column {name!r}: found NaN pixel values in an image")


def feature_names(schema: Schema, columns: Iterable[str]) -> list[str]:
    """Columns the data has that the schema does not use (reported, never an error)."""
    return [c for c in columns if c not in schema.names and c != schema.label]


class LabelledSplits:
    """What a splits object (in memory or streamed) derives from its `label_names` and
    `schema`: one definition for both."""

    label_names: tuple[str, ...]
    schema: Schema

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.label_names

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The single image feature's shape (the legacy builder form), else None."""
        image = self.schema.single_image
        return image.shape if image is not None else None
