"""Feature values on the wire: golden JSON and tf.Example, and back, for every kind."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfship.data.schema import Feature, Kind, Schema
from tfship.features_io import (
    example_rows,
    from_json,
    json_values,
    parse_spec,
    parsed_features,
    serialize,
    tensor_inputs,
)

SCHEMA = Schema(
    (
        Feature("amount", Kind.NUMERIC, "float32"),
        Feature("vec", Kind.NUMERIC, "float32", (2,)),
        Feature("country", Kind.CATEGORICAL, "string"),
        Feature("shop", Kind.CATEGORICAL, "int64"),
        Feature("note", Kind.TEXT, "string"),
        Feature("img", Kind.IMAGE, "float32", (2, 2, 1)),
    ),
    "label",
)
X = {
    "amount": np.array([7.0, np.nan], np.float32),
    "vec": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
    "country": np.array(["de", ""], object),
    "shop": np.array([3, -1], np.int64),
    "note": np.array(["grüße, ok", "x"], object),
    "img": np.arange(8, dtype=np.float32).reshape(2, 2, 2, 1),
}


@pytest.mark.parametrize(
    ("feature", "values", "json_form"),
    [
        (SCHEMA["note"], np.array(["grüße"], object), ["grüße"]),
        (SCHEMA["note"], np.array([b"\xff\xfe"], object), [{"b64": "//4="}]),
        (SCHEMA["shop"], np.array([3], np.int64), [3]),
        (SCHEMA["vec"], np.array([[1.5, 2.0]], np.float32), [[1.5, 2.0]]),
    ],
)
def test_json_values_round_trip_through_the_manifest(feature, values, json_form):
    encoded = json_values(feature, values)
    assert encoded == json_form
    back = from_json(feature, json.loads(json.dumps(encoded)))
    expected = tensor_inputs(Schema((feature,), "y"), {feature.name: values})[feature.name]
    assert back.tolist() == expected.tolist()


def test_example_rows_leave_missing_values_out_and_write_floats_with_a_point():
    rows = example_rows(SCHEMA, X)
    assert rows[0]["amount"] == 7.0 and "7.0" in json.dumps(rows[0]["amount"])
    assert rows[0]["country"] == "de" and rows[0]["shop"] == 3
    assert {"amount", "country", "shop"}.isdisjoint(rows[1])  # NaN, "" and -1 are missing
    assert rows[1]["vec"] == [3.0, 4.0] and len(rows[1]["img"]) == 4


def test_serialized_examples_parse_back_with_missing_values_restored():
    import tensorflow as tf

    parsed = tf.io.parse_example(
        tf.constant(serialize(SCHEMA, example_rows(SCHEMA, X))), parse_spec(SCHEMA)
    )
    got = {k: v.numpy() for k, v in parsed_features(SCHEMA, parsed).items()}
    assert got["amount"][0] == 7.0 and np.isnan(got["amount"][1])
    assert got["country"].tolist() == [b"de", b""] and got["shop"].tolist() == [3, -1]
    assert got["note"][0].decode() == "grüße, ok"
    assert got["img"].shape == (2, 2, 2, 1) and np.array_equal(got["img"], X["img"])
    assert np.array_equal(got["vec"], X["vec"])
