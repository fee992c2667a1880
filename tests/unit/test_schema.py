"""Schema inference, data.features resolution and column conversion (tfship.data.infer)."""

from __future__ import annotations

import numpy as np
import pytest

from tfship.config.sections import FeatureDecl
from tfship.data.infer import conform, infer_schema, resolve_schema
from tfship.data.schema import Feature, Kind, Schema
from tfship.errors import DataError


def strings(*values):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


COLUMNS = {
    "age": np.array([31.0, np.nan, 45.0], dtype=np.float32),
    "visits": np.array([1, 2, 3], dtype=np.int64),
    "coords": np.zeros((3, 2), dtype=np.float32),
    "pixels": np.zeros((3, 4, 4, 1), dtype=np.uint8),
    "city": strings("Oslo", "Rome", ""),
    "review": strings("a very good stay", "too loud at night", "ok"),
    "label": np.array([0, 1, 0]),
}


@pytest.mark.parametrize(
    ("name", "kind", "dtype", "shape"),
    [
        ("age", Kind.NUMERIC, "float32", ()),
        ("visits", Kind.NUMERIC, "float32", ()),  # integers stay numeric unless declared
        ("coords", Kind.NUMERIC, "float32", (2,)),
        ("pixels", Kind.IMAGE, "float32", (4, 4, 1)),
        ("city", Kind.CATEGORICAL, "string", ()),
        ("review", Kind.TEXT, "string", ()),  # median 3 words
    ],
)
def test_infer_schema_gives_each_column_its_kind(name, kind, dtype, shape) -> None:
    schema = infer_schema(COLUMNS, "label")
    assert schema[name] == Feature(name, kind, dtype, shape)
    assert "label" not in schema and schema.label == "label"


def test_the_inferred_schema_round_trips_through_json_and_describes_itself() -> None:
    schema = infer_schema(COLUMNS, "label")
    assert Schema.from_json(schema.to_json()) == schema
    assert "  city: {kind: categorical, dtype: string}" in schema.describe()


def test_declared_kinds_win_and_undeclared_columns_are_dropped() -> None:
    declared = {
        "visits": "categorical",
        "age": FeatureDecl(kind="numeric"),
        "city": {"kind": "categorical"},
    }
    schema = resolve_schema(declared, COLUMNS, "label")
    assert schema.names == ("visits", "age", "city")
    assert schema["visits"] == Feature("visits", Kind.CATEGORICAL, "string")
    out = conform(schema, COLUMNS)
    assert set(out) == {"visits", "age", "city"}
    assert out["visits"].tolist() == ["1", "2", "3"]  # numbers as their text
    schema.check(out, "t")


def test_numbers_declared_as_int64_categories_keep_missing_as_minus_one() -> None:
    cols = {"zip": np.array([501.0, np.nan, 90210.0]), "label": np.array([0, 1, 0])}
    schema = resolve_schema({"zip": FeatureDecl(kind="categorical", dtype="int64")}, cols, "label")
    out = conform(schema, cols)
    assert out["zip"].dtype == np.int64 and out["zip"].tolist() == [501, -1, 90210]


def test_strings_declared_numeric_are_parsed_with_missing_cells_as_nan() -> None:
    cols = {"x": strings("1.5", "", "NA", "7"), "label": np.arange(4)}
    out = conform(resolve_schema({"x": "numeric"}, cols, "label"), cols)
    assert out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["x"], np.array([1.5, np.nan, np.nan, 7.0], np.float32))


BAD = [  # (declared, columns, fragment)
    (
        {"x": "numeric"},
        {"x": strings("1", "two")},
        "column 'x' row 1: found 'two'; expected a number",
    ),
    (
        {"x": FeatureDecl(kind="categorical", dtype="int64")},
        {"x": np.array([1.0, 2.5])},
        "column 'x' row 1: found '2.5'; expected an integer category id",
    ),
    ({"x": "text"}, {"x": np.array([b"ok", b"\xff"], dtype=object)}, "is not UTF-8 text"),
    ({"nope": "numeric"}, {"x": np.zeros(2)}, "['nope'] declared in data.features are not in"),
    ({"x": "text"}, {"x": np.zeros((2, 3))}, "expected one string per example"),
    (
        {"x": FeatureDecl(kind="image", shape=[2, 2, 1])},
        {"x": np.zeros((2, 3, 3, 1))},
        "found values of shape [3, 3, 1] per example; expected [2, 2, 1]",
    ),
    ({"x": "numeric"}, {"x": np.array([1.0, np.inf])}, "found 1 infinite value(s)"),
    ({"x": "image"}, {"x": np.full((2, 2, 2, 1), np.nan)}, "found NaN pixel values"),
    ({"x": "sound"}, {"x": np.zeros(2)}, "kind 'sound' is not one tfship knows"),
]


@pytest.mark.parametrize(("declared", "columns", "fragment"), BAD)
def test_data_that_does_not_fit_the_schema_is_a_data_error(declared, columns, fragment) -> None:
    with pytest.raises(DataError) as err:
        schema = resolve_schema(declared, columns, "label")
        schema.check(conform(schema, columns), "d.csv")
    assert fragment in str(err.value), str(err.value)
    assert err.value.exit_code == 4


def test_a_column_of_mixed_values_cannot_be_inferred_and_says_to_declare_it() -> None:
    with pytest.raises(DataError, match=r"(?s)column 'm': cannot infer its kind.*data\.features"):
        infer_schema({"m": strings("a", 3)}, "label")


def test_a_column_that_is_also_the_label_cannot_be_a_feature() -> None:
    with pytest.raises(DataError, match="both the label and a feature"):
        resolve_schema({"label": "numeric"}, {"label": np.zeros(3)}, "label")
