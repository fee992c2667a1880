"""Golden requests for any task: typed inputs from the manifest, string outputs compared
exactly, classify/regress results compared with `golden.examples`, the manifest schema, and
the tf.Example encoding the client sends over gRPC."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfship.errors import DataError, ModelError
from tfship.serving import golden
from tfship.serving.wire import example_proto, example_request, json_example

SIGNATURE = {
    "name": "serving_default",
    "inputs": {
        "amount": {"dtype": "float32", "shape": []},
        "count": {"dtype": "int64", "shape": []},
        "country": {"dtype": "string", "shape": []},
    },
    "outputs": {"probability": {}, "class_name": {}},
}


def manifest(**golden_extra) -> dict:
    return {
        "version": 3,
        "signature": SIGNATURE,
        "golden": {
            "tolerance": 1e-4,
            "inputs": {
                "amount": [1.5, None],
                "count": [2, 0],
                "country": ["d\u00e9", {"b64": "//4="}],
            },
            "outputs": {"probability": [0.25, 0.75], "class_name": ["legit", "fraud"]},
            **golden_extra,
        },
    }


EXAMPLES = {
    "classify": {
        "examples": [{"amount": 1.5, "country": "de"}, {"amount": 7.0}],
        "outputs": {
            "scores": [[0.75, 0.25], [0.25, 0.75]],
            "classes": [["legit", "fraud"], ["legit", "fraud"]],
        },
    },
    "regress": {"examples": [{"amount": 1.5}], "outputs": {"outputs": [0.25]}},
}


def test_golden_inputs_take_the_signatures_dtypes() -> None:
    x = golden.golden_inputs(manifest())
    assert x["amount"].dtype == np.float32 and np.isnan(x["amount"][1])  # null: missing
    assert x["count"].dtype == np.int64 and x["count"].tolist() == [2, 0]
    assert x["country"].tolist() == ["d\u00e9".encode(), b"\xff\xfe"]  # b64 decoded


def test_digits_golden_inputs_stay_float32_pixels() -> None:
    m = {"golden": {"inputs": {"pixels": [[[[0.0], [255.0]]]]}, "outputs": {"x": [1]}}}
    x = golden.golden_inputs(m)
    assert list(x) == ["pixels"] and x["pixels"].dtype == np.float32
    assert x["pixels"].shape == (1, 1, 2, 1)


@pytest.mark.parametrize(
    ("name", "value", "found"),
    [("count", [1.5, "x"], "x"), ("country", [7], "int 7"), ("country", [{"b64": "%%"}], "")],
)
def test_a_golden_input_of_the_wrong_kind_is_a_model_error_naming_it(name, value, found) -> None:
    m = manifest()
    m["golden"]["inputs"][name] = value
    with pytest.raises(ModelError, match=f"golden input '{name}': found .*{found}"):
        golden.golden_inputs(m)


def test_string_outputs_must_be_equal_and_the_first_difference_is_named() -> None:
    m = manifest()
    ok = golden.compare(m, {"probability": [0.25, 0.75], "class_name": [b"legit", b"fraud"]})
    assert ok.ok, ok.problems
    bad = golden.compare(m, {"probability": [0.25, 0.75], "class_name": ["fraud", "legit"]})
    assert not bad.ok
    assert bad.problems == (
        "output 'class_name' differs at [0]: 'fraud', expected 'legit' (2 value(s) differ)",
    )


def test_numeric_outputs_keep_their_tolerance_next_to_strings() -> None:
    m = manifest()
    check = golden.compare(m, {"probability": [0.2, 0.75], "class_name": ["legit", "fraud"]})
    assert not check.ok and check.max_abs_diff == pytest.approx(0.05)
    assert "output 'probability' differs by 0.05 (tolerance 0.0001)" in check.problems
    shape = golden.compare(m, {"probability": [0.25, 0.75], "class_name": ["legit"]})
    assert "output 'class_name' has shape [1], expected [2]" in shape.problems


def test_classify_results_compare_labels_exactly_and_scores_within_tolerance() -> None:
    want = EXAMPLES["classify"]["outputs"]
    served = [[("legit", 0.75), ("fraud", 0.25)], [("legit", 0.25), ("fraud", 0.75)]]
    assert golden.compare_examples("classify", want, served).ok
    swapped = [[("fraud", 0.75), ("legit", 0.25)], served[1]]
    check = golden.compare_examples("classify", want, swapped)
    assert check.problems[0].startswith(":classify output 'classes' differs at [0, 0]: 'fraud'")
    off = [[("legit", 0.7), ("fraud", 0.3)], served[1]]
    check = golden.compare_examples("classify", want, off, tolerance=1e-3)
    assert check.problems == (":classify output 'scores' differs by 0.05 (tolerance 0.001)",)


def test_regress_results_compare_within_tolerance_and_refuse_nan() -> None:
    want = EXAMPLES["regress"]["outputs"]
    assert golden.compare_examples("regress", want, [0.25004]).ok
    assert not golden.compare_examples("regress", want, [float("nan")]).ok
    short = golden.compare_examples("regress", want, [])
    assert short.problems == (":regress output 'outputs' has shape [0], expected [1]",)
    with pytest.raises(ModelError, match="'predict'; expected 'classify' or 'regress'"):
        golden.compare_examples("predict", want, [0.25])


class _FakeClient:
    """Records the calls golden.replay makes and answers what the manifest expects."""

    def __init__(self, classes: list[list[str]]) -> None:
        self.calls: list[tuple] = []
        self.classes = classes

    def predict(self, inputs, **where):
        self.calls.append(("predict", sorted(inputs), where))
        return {"probability": np.array([0.25, 0.75]), "class_name": np.array(["legit", "fraud"])}

    def classify(self, examples, *, signature, **where):
        self.calls.append(("classify", signature, where))
        scores = EXAMPLES["classify"]["outputs"]["scores"]
        return [list(zip(c, s, strict=True)) for c, s in zip(self.classes, scores, strict=True)]

    def regress(self, examples, *, signature, **where):
        self.calls.append(("regress", signature, where))
        return [0.25]


def test_replay_sends_every_golden_request_and_combines_the_checks() -> None:
    m = manifest(examples=EXAMPLES)
    good = _FakeClient(EXAMPLES["classify"]["outputs"]["classes"])
    assert golden.replay(good, m, None, label="canary").ok
    assert good.calls == [
        ("predict", ["amount", "count", "country"], {"label": "canary"}),
        ("classify", "classify", {"label": "canary"}),
        ("regress", "regress", {"label": "canary"}),
    ]
    bad = golden.replay(_FakeClient([["legit", "fraud"], ["legit", "other"]]), m, None, version=3)
    assert bad.problems == (
        ":classify output 'classes' differs at [1, 1]: 'other', expected 'fraud' "
        "(1 value(s) differ)",
    )


def test_the_manifest_schema_takes_strings_b64_and_examples() -> None:
    m = manifest(examples=EXAMPLES)
    assert golden.check_manifest(json.loads(json.dumps(m)), version=3, where="x") == m


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("golden", "inputs", "country"), [{"b64": "not base64!"}], "/golden/inputs/country/0"),
        (("golden", "outputs", "probability"), [float("nan")], "is not a finite number"),
        (("golden", "outputs"), {}, "/golden/outputs"),
        (("golden", "examples"), {"predict": EXAMPLES["regress"]}, "'predict' is not one of"),
        (("golden", "examples", "regress", "examples"), [], "should be non-empty"),
        (("version",), -5, "/version"),
    ],
)
def test_the_manifest_schema_keeps_its_protections(path, value, problem) -> None:
    m = manifest(examples=json.loads(json.dumps(EXAMPLES)))
    node = m
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ModelError, match="not one deploy can trust") as err:
        golden.check_manifest(m, version=None, where="export")
    assert problem in str(err.value)


def test_tf_example_rows_map_json_kinds_to_feature_lists() -> None:
    ex = example_proto({"f": [1.5, 2.0], "i": 7, "s": "d\u00e9", "b": {"b64": "/w=="}, "t": True})
    f = ex.features.feature
    assert list(f["f"].float_list.value) == [1.5, 2.0]
    assert list(f["i"].int64_list.value) == [7] and list(f["t"].int64_list.value) == [1]
    assert list(f["s"].bytes_list.value) == ["d\u00e9".encode()]
    assert list(f["b"].bytes_list.value) == [b"\xff"]
    request = example_request("regress", [{"i": 1}, {"i": 2}], "regress")
    assert request.model_spec.signature_name == "regress"
    assert len(request.input.example_list.examples) == 2


def test_a_feature_mixing_kinds_or_of_an_unknown_kind_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"feature 'x' mixes \['bytes_list', 'float_list'\]"):
        example_proto({"x": [1.5, "a"]})
    with pytest.raises(DataError, match="feature 'y': found NoneType 'None'"):
        example_proto({"y": None})


def test_rest_example_rows_keep_floats_floats_and_b64_non_utf8() -> None:
    row = json_example({"a": np.float32(7.0), "n": np.array([1, 2]), "s": b"\xff", "t": b"ok"})
    assert json.dumps(row) == '{"a": 7.0, "n": [1, 2], "s": {"b64": "/w=="}, "t": "ok"}'
