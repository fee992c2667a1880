"""The stand-in's predict / classify / regress with any task's inputs (named, int64, strings,
`{"b64": ...}`), on the tiny keras models of testmodels, REST and gRPC, row and columnar
formats; expected values are what TensorFlow computes with the same SavedModel. Sources:
g3doc/api_rest.md, util/json_tensor.cc, classifier.cc, regressor.cc (tensorflow/serving)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests

from tests.tfserving_standin import testmodels
from tests.tfserving_standin.fixture import start_model_server
from tfship.serving.client import ServerAnswered, ServingClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = {
    "tab": testmodels.export_tabular_binary,
    "reg": testmodels.export_regression,
    "text": testmodels.export_text,
}
CONFIG = "model_config_list {\n%s}\n"
ENTRY = '  config { name: "%s" base_path: "%s" model_platform: "tensorflow" }\n'
TIMEOUT = 30


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-any-task")
    return {name: make(root / name, 3) for name, make in MODELS.items()}


@pytest.fixture(scope="module")
def server(tmp_path_factory, exports):
    root = tmp_path_factory.mktemp("tiny-serving")
    entries = ""
    for name, path in exports.items():
        testmodels.publish(path, root / "models" / name, 1)
        entries += ENTRY % (name, root / "models" / name)
    with start_model_server(root, model_config_text=CONFIG % entries) as handle:
        yield handle


def tf_run(exports, model, signature, **inputs):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exports[model]))
    fn = loaded.signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def post(server, model, method, body):
    return requests.post(f"{server.rest_url}/v1/models/{model}:{method}", json=body, timeout=30)


def test_row_format_takes_named_inputs_and_answers_named_outputs_with_strings(server, exports):
    body = {"instances": [{"amount": 12.5, "country": "de"}, {"amount": 250.0, "country": "zz"}]}
    resp = post(server, "tab", "predict", body)
    assert resp.status_code == 200, resp.text
    rows = resp.json()["predictions"]
    want = tf_run(exports, "tab", "serving_default", amount=[12.5, 250.0], country=["de", "zz"])
    assert [r["class_name"] for r in rows] == [c.decode() for c in want["class_name"]]
    assert [r["class_id"] for r in rows] == want["class_id"].tolist()
    np.testing.assert_allclose([r["probability"] for r in rows], want["probability"], rtol=1e-6)


def test_columnar_format_and_b64_strings_are_the_same_request(server):
    plain = {"inputs": {"amount": [12.5, 3.0], "country": ["de", "us"]}}
    b64 = {"inputs": {"amount": [12.5, 3.0], "country": [{"b64": "ZGU="}, {"b64": "dXM="}]}}
    a, b = post(server, "tab", "predict", plain), post(server, "tab", "predict", b64)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json() == b.json()
    assert set(a.json()["outputs"]) == {"probability", "class_id", "class_name"}


def test_int64_inputs_take_json_integers_and_refuse_a_decimal_point(server, exports):
    ok = post(server, "reg", "predict", {"inputs": {"x": [[1.0, 2.0, 3.0]], "count": [4]}})
    assert ok.status_code == 200, ok.text
    want = tf_run(exports, "reg", "serving_default", x=[[1.0, 2.0, 3.0]], count=np.array([4]))
    np.testing.assert_allclose(ok.json()["outputs"], want["prediction"], rtol=1e-6)
    bad = post(server, "reg", "predict", {"inputs": {"x": [[1.0, 2.0, 3.0]], "count": [4.5]}})
    assert bad.status_code == 400
    assert bad.json()["error"] == "JSON Value: 4.5 Type: Number is not of expected type: int64"


def test_string_outputs_are_text_and_bytes_outputs_are_b64(server):
    raw = b"\xff\xfeok"
    body = {"instances": ["h\u00e9llo", {"b64": base64.b64encode(raw).decode()}]}
    resp = post(server, "text", "predict", body)
    assert resp.status_code == 200, resp.text
    rows = resp.json()["predictions"]
    # `text_bytes` ends in _bytes: TF Serving base64-encodes it; `label` is plain text.
    assert [base64.b64decode(r["text_bytes"]["b64"]) for r in rows] == ["h\u00e9llo".encode(), raw]
    assert {r["label"] for r in rows} <= {"pos", "neg"}


def test_a_bad_b64_string_is_tf_servings_decode_error(server):
    resp = post(server, "text", "predict", {"instances": [{"b64": "not base64!"}]})
    assert resp.status_code == 400
    assert resp.json()["error"] == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Unable to base64 decode"
    )


def test_client_predict_sends_each_dtype_as_tf_serving_reads_it(server, exports):
    c = ServingClient("reg", rest_url=server.rest_url)
    x = np.array([[0.5, 1.0, 2.0], [3.0, 2.0, 1.0]], np.float32)
    out = c.predict({"x": x, "count": np.array([1, 7], np.int64)})
    want = tf_run(exports, "reg", "serving_default", x=x, count=np.array([1, 7]))
    np.testing.assert_allclose(out["output_0"], want["prediction"], rtol=1e-6)
    text = ServingClient("text", rest_url=server.rest_url).predict(
        {"text": np.array([b"\xff\x00", "caf\u00e9"], dtype=object)}
    )
    assert text["text_bytes"].tolist() == [{"b64": "/wA="}, {"b64": "Y2Fmw6k="}]


def test_classify_merges_the_context_into_every_example(server, exports):
    c = ServingClient("tab", rest_url=server.rest_url)
    merged = c.classify([{"amount": 5.0, "country": "fr"}, {"amount": 80.0, "country": "fr"}])
    context = c.classify([{"amount": 5.0}, {"amount": 80.0}], context={"country": "fr"})
    assert merged == context
    # A feature in both: the example's value wins (util.cc appends it after the context).
    assert c.classify([{"amount": 5.0, "country": "fr"}], context={"country": "de"}) == merged[:1]
    assert [[label for label, _ in row] for row in merged] == [["legit", "fraud"]] * 2
    want = tf_run(exports, "tab", "serving_default", amount=[5.0, 80.0], country=["fr", "fr"])
    np.testing.assert_allclose([row[1][1] for row in merged], want["probability"], rtol=1e-5)


def test_regress_on_multi_valued_float_and_int64_features(server, exports):
    c = ServingClient("reg", rest_url=server.rest_url)
    got = c.regress([{"x": [1.0, 2.0, 3.0], "count": 4}, {"x": [0.0, 0.0, 1.5], "count": 0}])
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.5]], np.float32)
    want = tf_run(exports, "reg", "serving_default", x=x, count=np.array([4, 0]))
    np.testing.assert_allclose(got, want["prediction"], rtol=1e-5)


def test_grpc_classify_and_regress_answer_what_rest_answers(server):
    c = ServingClient("tab", rest_url=server.rest_url, grpc_target=server.grpc_target)
    rows = [{"amount": 12.5, "country": "de"}, {"amount": 99.0, "country": b"\xff"}]
    rest, grpc_ = c.classify(rows), c.classify_grpc(rows)
    assert [[label for label, _ in r] for r in grpc_] == [[label for label, _ in r] for r in rest]
    np.testing.assert_allclose(
        [[s for _, s in r] for r in grpc_], [[s for _, s in r] for r in rest]
    )
    np.testing.assert_allclose(c.regress_grpc(rows), c.regress(rows), rtol=1e-6)


def test_grpc_errors_carry_tf_servings_code_and_text(server):
    c = ServingClient("text", rest_url=server.rest_url, grpc_target=server.grpc_target)
    with pytest.raises(ServerAnswered) as err:
        c.classify_grpc([{"text": "hi"}], signature="serving_default")
    assert err.value.status == 3  # INVALID_ARGUMENT
    # classifier.cc checks the outputs' count before the input's name.
    assert err.value.error == "Expected one or two output Tensors, found 3"
    with pytest.raises(ServerAnswered) as err:
        ServingClient("reg", rest_url=None, grpc_target=server.grpc_target).classify_grpc(
            [{"x": [1.0, 2.0, 3.0]}], signature="classify"
        )
    assert err.value.error == "No signature was found with the name: classify"


def test_rest_classify_on_a_model_without_that_signature_is_400(server):
    resp = post(server, "text", "classify", {"examples": [{"text": "hi"}]})
    assert resp.status_code == 400
    assert resp.json()["error"] == "Expected one or two output Tensors, found 3"
    resp = post(server, "text", "regress", {"examples": [{"text": "hi"}]})
    assert resp.status_code == 400
    assert resp.json()["error"] == "Expected one output Tensor."
    resp = post(server, "text", "regress", {"signature_name": "regress", "examples": [{"a": 1}]})
    assert resp.status_code == 400
    assert resp.json()["error"] == "No signature was found with the name: regress"


def test_grpc_classify_without_examples_is_input_is_empty(server):
    from tensorflow_serving.apis import classification_pb2

    c = ServingClient("tab", rest_url=None, grpc_target=server.grpc_target)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.signature_name = "classify"
    with pytest.raises(ServerAnswered) as err:
        c.example_method_grpc("classify", request)
    assert (err.value.status, err.value.error) == (3, "Input is empty.")
