"""The TF Serving stand-in's REST API, case by case against TF Serving's documented behaviour.

Expected bodies and codes come from tensorflow/serving (g3doc/api_rest.md,
model_servers/http_rest_api_handler_test.cc, get_model_status_impl.cc, json_tensor.cc,
server_core.cc); each module of tests/tfserving_standin names its sources. With
TFSHIP_MODEL_SERVER pointing at a real tensorflow_model_server the same tests run against it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from tests.tfserving_standin import testmodels
from tests.tfserving_standin.fixture import start_model_server

pytestmark = pytest.mark.integration

CONFIG = """
model_config_list {
  config {
    name: "digits"
    base_path: "%(digits)s"
    model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "poll"
    base_path: "%(poll)s"
    model_platform: "tensorflow"
  }
}
"""
OK = {"error_code": "OK", "error_message": ""}
TIMEOUT = 30


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {seed: testmodels.export_tiny_model(root / f"seed{seed}", seed) for seed in (1, 2)}


@pytest.fixture(scope="module")
def server(tmp_path_factory, exports):
    root = tmp_path_factory.mktemp("serving")
    digits, poll = root / "models" / "digits", root / "models" / "poll"
    testmodels.publish(exports[1], digits, 1)
    testmodels.publish(exports[2], digits, 2)
    testmodels.publish(exports[1], poll, 1)
    with start_model_server(
        root,
        model_config_text=CONFIG % {"digits": digits, "poll": poll},
        extra_flags=[
            "--file_system_poll_wait_seconds=1",
            # Labels in the initial config point at versions not loaded yet at startup.
            "--allow_version_labels_for_unavailable_models",
            "--max_num_load_retries=1",
            "--load_retry_interval_micros=200000",
        ],
    ) as handle:
        handle.poll_base = poll
        yield handle


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(3, 8, 8, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def expected(exports, pixels):
    """What TensorFlow itself computes for each exported version."""
    import tensorflow as tf

    out = {}
    for seed, path in exports.items():
        result = tf.saved_model.load(str(path)).signatures["serving_default"](
            pixels=tf.constant(pixels)
        )
        out[seed] = {k: v.numpy() for k, v in result.items()}
    return out


def get(server, path):
    return requests.get(server.rest_url + path, timeout=TIMEOUT)


def post(server, path, body):
    data = body if isinstance(body, bytes | str) else None
    return requests.post(
        server.rest_url + path, data=data, json=None if data is not None else body, timeout=TIMEOUT
    )


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- status ----------------------------------------------------------------------------------


def test_status_lists_every_version_newest_first_with_ok_status(server):
    response = get(server, "/v1/models/digits")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": OK},
            {"version": "1", "state": "AVAILABLE", "status": OK},
        ]
    }


def test_status_of_one_version_lists_only_that_version(server):
    response = get(server, "/v1/models/digits/versions/1")
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": OK}]
    }


def test_status_by_label_ignores_the_label_as_tf_serving_does(server):
    # GetModelStatusImpl only looks at model_spec.version: a label returns every version.
    by_label = get(server, "/v1/models/digits/labels/stable")
    assert by_label.status_code == 200
    assert by_label.json() == get(server, "/v1/models/digits").json()


# -- metadata --------------------------------------------------------------------------------


def test_metadata_describes_the_serving_signature(server):
    body = get(server, "/v1/models/digits/metadata").json()
    assert body["model_spec"] == {"name": "digits", "signature_name": "", "version": "2"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    pixels_info = signature["inputs"]["pixels"]
    assert pixels_info["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in pixels_info["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    assert signature["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert signature["outputs"]["class_id"]["dtype"] == "DT_INT64"
    assert signature["method_name"] == "tensorflow/serving/predict"


def test_metadata_by_label_names_the_labelled_version(server):
    body = get(server, "/v1/models/digits/labels/stable/metadata").json()
    assert body["model_spec"]["version"] == "1"


# -- predict ---------------------------------------------------------------------------------


def test_row_predict_with_two_outputs_returns_one_object_per_instance(server, pixels, expected):
    response = post(server, "/v1/models/digits/versions/1:predict", {"instances": pixels.tolist()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    assert [p["class_id"] for p in predictions] == expected[1]["class_id"].tolist()
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions], expected[1]["probabilities"], rtol=1e-6
    )


def test_row_predict_with_one_output_returns_a_plain_list(server, pixels, expected):
    response = post(
        server,
        "/v1/models/digits/versions/1:predict",
        {"signature_name": "probabilities_only", "instances": pixels.tolist()},
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["predictions"], expected[1]["probabilities"], rtol=1e-6
    )


def test_columnar_predict_returns_outputs_keyed_by_name(server, pixels, expected):
    response = post(
        server, "/v1/models/digits/versions/2:predict", {"inputs": {"pixels": pixels.tolist()}}
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert outputs["class_id"] == expected[2]["class_id"].tolist()
    np.testing.assert_allclose(outputs["probabilities"], expected[2]["probabilities"], rtol=1e-6)


def test_columnar_predict_with_one_output_returns_the_bare_value(server, pixels, expected):
    response = post(
        server,
        "/v1/models/digits/versions/2:predict",
        {"signature_name": "probabilities_only", "inputs": pixels.tolist()},
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"], expected[2]["probabilities"], rtol=1e-6)


def test_predict_without_version_uses_the_latest_available_version(server, pixels, expected):
    body = post(server, "/v1/models/digits:predict", {"instances": pixels.tolist()}).json()
    np.testing.assert_allclose(
        [p["probabilities"] for p in body["predictions"]], expected[2]["probabilities"], rtol=1e-6
    )


@pytest.mark.parametrize(("label", "seed"), [("stable", 1), ("canary", 2)])
def test_predict_by_label_answers_with_the_labelled_version(server, pixels, expected, label, seed):
    body = post(
        server, f"/v1/models/digits/labels/{label}:predict", {"instances": pixels.tolist()}
    ).json()
    np.testing.assert_allclose(
        [p["probabilities"] for p in body["predictions"]],
        expected[seed]["probabilities"],
        rtol=1e-6,
    )


# -- errors ----------------------------------------------------------------------------------

IMAGE = np.zeros((1, 8, 8, 1)).tolist()

ERROR_CASES = [
    # (method, path, body, HTTP status, substring of the error message)
    (
        "POST",
        "/v1/models/nope:predict",
        {"instances": IMAGE},
        404,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "POST",
        "/v1/models/digits/versions/99:predict",
        {"instances": IMAGE},
        404,
        "Servable not found for request: Specific(digits, 99)",
    ),
    (
        "POST",
        "/v1/models/digits/labels/nope:predict",
        {"instances": IMAGE},
        400,
        "Unrecognized servable version label: nope",
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        b"instances = [1, 2]",
        400,
        "JSON Parse error: Invalid value",
    ),
    ("POST", "/v1/models/digits:predict", b"", 400, "JSON Parse error: The document is empty"),
    (
        "POST",
        "/v1/models/digits:predict",
        {"signature_name": 100},
        400,
        "'signature_name' key must be a string value.",
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"instances": [["x", "y"]]},
        400,
        "is not of expected type: float",
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"instancez": IMAGE},
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"instances": IMAGE, "inputs": IMAGE},
        400,
        "expecting only one of 'inputs' or 'instances' keys to exist",
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"signature_name": "nope", "instances": IMAGE},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    (
        "GET",
        "/v1/models/digits/versions/99",
        None,
        404,
        "Could not find version 99 of model digits",
    ),
    ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found for request: Latest(nope)"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    (
        "GET",
        "/v1/models/digits:predict",
        None,
        400,
        "Malformed request: GET /v1/models/digits:predict",
    ),
    ("POST", "/v1/models/digits/metadata", {}, 400, "Malformed request"),
    ("GET", "/v1/foo", None, 400, "Malformed request"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    ERROR_CASES,
    ids=[f"{c[0]} {c[1]} {c[3]}" for c in ERROR_CASES],
)
def test_errors_have_tf_serving_status_codes_and_error_bodies(
    server, method, path, body, status, message
):
    response = get(server, path) if method == "GET" else post(server, path, body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]


# -- filesystem polling ----------------------------------------------------------------------


def test_new_versions_are_picked_up_and_a_broken_one_fails_while_the_old_keeps_serving(
    server, exports, pixels, expected
):
    def states():
        return {
            s["version"]: s for s in get(server, "/v1/models/poll").json()["model_version_status"]
        }

    assert states()["1"]["state"] == "AVAILABLE"

    # A non-numeric directory (an upload in progress) is never served.
    (server.poll_base / "upload.tmp").mkdir()
    testmodels.publish(exports[2], server.poll_base, 2)
    wait_for(lambda: states().get("1", {}).get("state") == "END", what="v2 replacing v1")
    assert states()["2"] == {"version": "2", "state": "AVAILABLE", "status": OK}
    assert states()["1"] == {"version": "1", "state": "END", "status": OK}
    body = post(server, "/v1/models/poll:predict", {"instances": pixels.tolist()}).json()
    np.testing.assert_allclose(
        [p["probabilities"] for p in body["predictions"]], expected[2]["probabilities"], rtol=1e-6
    )

    testmodels.publish_broken(exports[1], server.poll_base, 3)
    broken = wait_for(
        lambda: states().get("3", {}).get("state") == "END" and states()["3"],
        what="broken v3 to end",
    )
    assert broken["status"]["error_code"] != "OK"
    assert broken["status"]["error_message"]
    assert states()["2"]["state"] == "AVAILABLE"
    response = post(server, "/v1/models/poll:predict", {"instances": pixels.tolist()})
    assert response.status_code == 200
    np.testing.assert_allclose(
        [p["probabilities"] for p in response.json()["predictions"]],
        expected[2]["probabilities"],
        rtol=1e-6,
    )


# -- label rules with --allow_version_labels_for_unavailable_models ------------------------


def test_unavailable_versions_take_new_labels_but_existing_labels_never_move_to_them(server):
    import grpc
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    base = CONFIG % {"digits": server.poll_base.parent / "digits", "poll": server.poll_base}

    def reload(text):
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(text, request.config)
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            return stub.HandleReloadConfigRequest(request, timeout=TIMEOUT)

    moved = base.replace('key: "canary" value: 2', 'key: "canary" value: 9')
    with pytest.raises(grpc.RpcError) as err:
        reload(moved)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 9 of model digits" in err.value.details()
    assert (
        get(server, "/v1/models/digits/labels/canary/metadata").json()["model_spec"]["version"]
        == "2"
    )

    added = base.replace(
        'key: "canary" value: 2 }',
        'key: "canary" value: 2 }\n    version_labels { key: "next" value: 9 }',
    )
    assert reload(added).status.error_code == 0
    response = post(server, "/v1/models/digits/labels/next:predict", {"instances": IMAGE})
    assert response.status_code == 404
    assert "Specific(digits, 9)" in response.json()["error"]
    reload(base)
