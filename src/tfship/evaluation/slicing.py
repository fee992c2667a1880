"""Which features evaluate may slice by (`gate.slices`), and their values as slice keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tfship.data.schema import Kind
from tfship.errors import ConfigError

if TYPE_CHECKING:
    from tfship.data.schema import Schema


def check_slice_features(features: Sequence[str], x: Mapping[str, Any], schema: Schema | None):
    """ConfigError unless every feature can be sliced: a categorical feature of the schema, or
    any string / integer feature (a float or image has no values to group by)."""
    names = list(schema.names) if schema is not None else sorted(x)
    where = "the schema has" if schema is not None else "the data has"
    for name in features:
        if name not in names:
            raise ConfigError(
                f"gate.slices: feature {name!r} is not a feature of the data; {where} {names}",
                hint="slice by one of those features, or add it to data.features",
            )
        if schema is not None:
            feat = schema[name]
            if feat.kind is Kind.CATEGORICAL or (not feat.shape and feat.dtype != "float32"):
                continue
            found = f"a {feat.kind.value} feature of dtype {feat.dtype}, shape {list(feat.shape)}"
        else:
            arr = np.asarray(x[name])
            if arr.ndim == 1 and (arr.dtype == object or arr.dtype.kind in "iuSU"):
                continue
            found = f"an array of dtype {arr.dtype}, shape {list(arr.shape[1:])}"
        categorical = [f.name for f in schema.of_kind(Kind.CATEGORICAL)] if schema else []
        raise ConfigError(
            f"gate.slices: feature {name!r} is {found}; slices need a categorical feature "
            f"or a scalar string / integer one (categorical features: {categorical})",
        )


def slice_values(values: np.ndarray, schema: Schema | None, feature: str) -> list[Any]:
    # The schema's missing value ("" or -1) is a missing value, so it forms the (missing) slice.
    missing = schema[feature].missing_value() if schema is not None and feature in schema else ""
    return [None if (v == missing and not isinstance(v, float)) else v for v in values.tolist()]
