"""Any task over TF Serving's APIs: named multi-input predict with strings, `:classify` and
`:regress` on tf.Example, over REST and gRPC, against the stand-in (TF Serving's formats and
errors, from util/json_tensor.cc, classifier.cc and regressor.cc), with real tfship exports.
With TFSHIP_MODEL_SERVER pointing at a real tensorflow_model_server the same tests run on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from tests.helpers.task_exports import export_task_model
from tests.tfserving_standin import testmodels
from tests.tfserving_standin.fixture import start_model_server
from tfship.serving import golden
from tfship.serving.client import ServerAnswered, ServingClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = """
model_config_list {
  config { name: "fraud" base_path: "%(fraud)s" model_platform: "tensorflow" }
  config { name: "price" base_path: "%(price)s" model_platform: "tensorflow" }
}
"""


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-exports")
    return {
        "fraud": export_task_model(root, "binary", "fraud"),
        "price": export_task_model(root, "regression", "price"),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory, exports):
    root = tmp_path_factory.mktemp("task-serving")
    bases = {name: root / "models" / name for name in exports}
    for name, path in exports.items():
        testmodels.publish(path, bases[name], 1)
    with start_model_server(root, model_config_text=CONFIG % bases) as handle:
        yield handle


def manifest(exports, name):
    return json.loads((exports[name] / "assets.extra" / "tfship-manifest.json").read_text())


def client(server, model):
    return ServingClient(model, rest_url=server.rest_url, grpc_target=server.grpc_target)


@pytest.mark.parametrize("name", ["fraud", "price"])
def test_every_golden_request_of_the_export_replays_over_rest(server, exports, name):
    m = manifest(exports, name)
    check = golden.replay(client(server, name), m, None, version=1)
    assert check.ok, check.problems
    methods = set(m["golden"].get("examples", {}))
    assert methods == ({"classify", "regress"} if name == "fraud" else {"regress"})


def test_predict_sends_named_string_inputs_and_b64_bytes(server, exports):
    c = client(server, "fraud")
    inputs = {
        "amount": np.array([12.5, 99.0], np.float32),
        "country": np.array(["ünïcode", b"\xff\xfe"], dtype=object),  # not UTF-8: {"b64": ...}
        "note": np.array(["refund", ""], dtype=object),
    }
    out = c.predict(inputs, version=1)
    assert out["probability"].shape == (2,) and np.isfinite(out["probability"]).all()
    assert out["class_id"].tolist() in ([0, 0], [0, 1], [1, 0], [1, 1])


def test_classify_answers_label_score_pairs_like_tf_serving(server, exports):
    m = manifest(exports, "fraud")
    body = {
        "signature_name": "classify",
        "examples": m["golden"]["examples"]["classify"]["examples"],
    }
    resp = requests.post(f"{server.rest_url}/v1/models/fraud:classify", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [[pair[0] for pair in row] for row in results] == [["legit", "fraud"]] * 4
    expected = m["golden"]["examples"]["classify"]["outputs"]["scores"]
    np.testing.assert_allclose([[p[1] for p in row] for row in results], expected, atol=1e-5)


def test_a_missing_feature_is_a_missing_value_not_an_error(server):
    # Left out of the example: the parse default (NaN / "") and the model's imputation apply.
    c = client(server, "fraud")
    (value,) = c.regress([{"country": "de"}], version=1)
    assert 0.0 <= value <= 1.0


# TF Serving's answers to malformed classify/regress requests (util/json_tensor.cc,
# servables/tensorflow/classifier.cc, regressor.cc).
BAD = [
    ("fraud", "classify", {"signature_name": "classify"}, "key 'examples' is expected"),
    ("fraud", "classify", {"signature_name": "classify", "examples": {}}, "to be an list/array"),
    ("fraud", "classify", {"signature_name": "classify", "examples": []}, "is an empty array"),
    (
        "fraud",
        "classify",
        {"signature_name": "classify", "examples": [1]},
        "Example must be JSON object",
    ),
    (
        "fraud",
        "classify",
        {"signature_name": "classify", "examples": [{"amount": None}]},
        "Feature: amount has element with unexpected JSON type: Null",
    ),
    (
        "fraud",
        "classify",
        {"signature_name": "classify", "examples": [{"amount": [1.5, "x"]}]},
        "Unexpected element type in feature: amount expecting type: float",
    ),
    (
        "fraud",
        "classify",
        {"signature_name": "nope", "examples": [{"amount": 1.0}]},
        "No signature was found with the name: nope",
    ),
    (
        "fraud",
        "classify",
        {"examples": [{"amount": 1.0}]},  # serving_default: three named inputs
        "Expected one input Tensor.",
    ),
    (
        "price",
        "classify",
        {"signature_name": "regress", "examples": [{"amount": 1.0}]},
        'Expected classification signature outputs to contain at least one of "classes" or',
    ),
]


@pytest.mark.parametrize(("model", "method", "body", "fragment"), BAD)
def test_a_malformed_example_request_gets_tf_servings_error(server, model, method, body, fragment):
    resp = requests.post(f"{server.rest_url}/v1/models/{model}:{method}", json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    assert fragment in resp.json()["error"]


def test_int_without_decimal_point_is_an_int64_feature_and_fails_a_float_feature(server):
    # The documented pitfall: 7 is int64, 7.0 is float.
    c = client(server, "price")
    with pytest.raises(ServerAnswered) as err:
        c.regress([{"amount": 7}], version=1)
    assert err.value.status == 400
    assert c.regress([{"amount": 7.0}], version=1)


def test_classify_and_regress_over_grpc_match_rest(server, exports):
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    from tests.helpers.task_exports import SCHEMA
    from tfship.features_io import serialize

    m = manifest(exports, "fraud")
    rows = m["golden"]["examples"]["classify"]["examples"]
    c = client(server, "fraud")
    creq = classification_pb2.ClassificationRequest()
    creq.model_spec.signature_name = "classify"
    rreq = regression_pb2.RegressionRequest()
    rreq.model_spec.signature_name = "regress"
    for raw in serialize(SCHEMA, rows):
        creq.input.example_list.examples.add().ParseFromString(raw)
        rreq.input.example_list.examples.add().ParseFromString(raw)
    classified = c.example_method_grpc("classify", creq, version=1)
    regressed = c.example_method_grpc("regress", rreq, version=1)
    assert classified.model_spec.version.value == 1
    scores = [[cl.score for cl in row.classes] for row in classified.result.classifications]
    np.testing.assert_allclose(
        scores, m["golden"]["examples"]["classify"]["outputs"]["scores"], atol=1e-5
    )
    np.testing.assert_allclose(
        [r.value for r in regressed.result.regressions],
        m["golden"]["examples"]["regress"]["outputs"]["outputs"],
        atol=1e-5,
    )


def test_a_served_model_that_answers_a_class_wrongly_fails_the_golden_check(server, exports):
    m = manifest(exports, "fraud")
    tampered = json.loads(json.dumps(m))
    tampered["golden"]["examples"]["classify"]["outputs"]["classes"][0][0] = "other"
    check = golden.replay(client(server, "fraud"), tampered, None, version=1)
    assert not check.ok
    assert any(":classify output 'classes' differs at [0, 0]" in p for p in check.problems)


def test_validate_replays_the_tf_example_warmup_and_golden_requests(server, exports, tmp_path):
    # tfship validate against a running server (launcher "url"): warmup records of every API
    # over gRPC, then predict + classify + regress golden requests over REST.
    import shutil

    from tfship.config import load_config
    from tfship.rundir import RunDir
    from tfship.validate import run_validate

    run_dir = RunDir(tmp_path / "run")
    shutil.copytree(exports["fraud"], run_dir.export / "1")
    cfg = load_config(
        None,
        overrides=[
            "project.model_name=fraud",
            f"serving.grpc_target={server.grpc_target}",
            "serving.latency_requests=3",
        ],
    )
    result = run_validate(cfg, run_dir, launcher="url", server_url=server.rest_url)
    assert result.status == "passed", result.note
    assert result.golden.ok and result.warmup_requests >= 3  # predict, classify, regress logs
