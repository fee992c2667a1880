"""The TF Serving stand-in's gRPC API and its version-label rules.

PredictionService / ModelService through the real stubs of tensorflow-serving-api. Expected
behaviour: model_servers/model_service_impl.cc (reload replaces the whole config, returns
without waiting for new versions), server_core.cc UpdateModelVersionLabelMap (labels only on
AVAILABLE versions; FAILED_PRECONDITION otherwise, nothing changes), predict_util.cc.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tests.tfserving_standin import testmodels
from tests.tfserving_standin.fixture import start_model_server

pytestmark = pytest.mark.integration

TIMEOUT = 30


def config_text(base_path, versions, labels=None) -> str:
    specific = " ".join(f"versions: {v}" for v in versions)
    label_lines = "".join(
        f'    version_labels {{ key: "{k}" value: {v} }}\n' for k, v in (labels or {}).items()
    )
    return (
        "model_config_list {\n  config {\n"
        f'    name: "digits"\n    base_path: "{base_path}"\n    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ specific {{ {specific} }} }}\n{label_lines}  }}\n}}\n"
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {seed: testmodels.export_tiny_model(root / f"seed{seed}", seed) for seed in (1, 2)}


@pytest.fixture(scope="module")
def server(tmp_path_factory, exports):
    root = tmp_path_factory.mktemp("serving")
    base = root / "models" / "digits"
    testmodels.publish(exports[1], base, 1)
    testmodels.publish(exports[2], base, 2)
    with start_model_server(
        root,
        model_config_text=config_text(base, [1]),
        extra_flags=["--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"],
    ) as handle:
        handle.base = base
        yield handle


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT)
        yield ch


@pytest.fixture(scope="module")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


PIXELS = np.random.default_rng(1).integers(0, 256, size=(2, 8, 8, 1)).astype(np.float32)


def predict(stub, *, version=None, label=None, output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(PIXELS))
    request.output_filter.extend(output_filter)
    return stub.Predict(request, timeout=TIMEOUT)


def status(stub) -> dict[int, tuple[str, int]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "digits"
    response = stub.GetModelStatus(request, timeout=TIMEOUT)
    return {
        s.version: (
            get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
            s.status.error_code,
        )
        for s in response.model_version_status
    }


def reload(stub, text):
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    return stub.HandleReloadConfigRequest(request, timeout=TIMEOUT)


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_predict_returns_outputs_and_the_version_that_answered(predictions, exports):
    response = predict(predictions)
    assert response.model_spec.name == "digits"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    expected = tf.saved_model.load(str(exports[1])).signatures["serving_default"](
        pixels=tf.constant(PIXELS)
    )
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["probabilities"]),
        expected["probabilities"].numpy(),
        rtol=1e-6,
    )
    assert (
        tf.make_ndarray(response.outputs["class_id"]).tolist()
        == expected["class_id"].numpy().tolist()
    )


def test_predict_output_filter_returns_only_the_requested_outputs(predictions):
    response = predict(predictions, output_filter=["class_id"])
    assert set(response.outputs) == {"class_id"}


def test_predict_for_a_version_not_loaded_is_not_found(predictions):
    with pytest.raises(grpc.RpcError) as err:
        predict(predictions, version=7)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Servable not found for request: Specific(digits, 7)" in err.value.details()


def test_metadata_packs_the_signature_def_map(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "digits"
    request.metadata_field.append("signature_def")
    response = predictions.GetModelMetadata(request, timeout=TIMEOUT)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert response.model_spec.version.value == 1
    assert set(signatures.signature_def["serving_default"].inputs) == {"pixels"}


def test_metadata_without_a_field_is_invalid(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "digits"
    with pytest.raises(grpc.RpcError) as err:
        predictions.GetModelMetadata(request, timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_reload_adds_a_version_then_labels_it_and_refuses_labels_on_unloaded_versions(
    server, predictions, models
):
    """The canary flow: add the version, wait AVAILABLE, then label (two reloads)."""
    assert status(models) == {1: ("AVAILABLE", 0)}

    # Labelling a version that is not loaded yet is refused and changes nothing.
    with pytest.raises(grpc.RpcError) as err:
        reload(models, config_text(server.base, [1, 2], {"stable": 1, "canary": 2}))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        "Request to assign label to version 2 of model digits, which is not currently "
        "available for inference"
    ) in err.value.details()
    time.sleep(1.5)  # a poll cycle: the rejected config must not have loaded version 2
    assert status(models) == {1: ("AVAILABLE", 0)}

    # Reload returns at once; version 2 becomes AVAILABLE afterwards.
    response = reload(models, config_text(server.base, [1, 2], {"stable": 1}))
    assert response.status.error_code == 0
    wait_for(lambda: status(models).get(2, ("",))[0] == "AVAILABLE", what="version 2")
    assert predict(predictions, label="stable").model_spec.version.value == 1

    reload(models, config_text(server.base, [1, 2], {"stable": 1, "canary": 2}))
    assert predict(predictions, label="canary").model_spec.version.value == 2
    assert predict(predictions, label="stable").model_spec.version.value == 1

    # Promote: move stable to 2, then drop version 1 from the policy; it is unloaded.
    reload(models, config_text(server.base, [1, 2], {"stable": 2, "canary": 2}))
    reload(models, config_text(server.base, [2], {"stable": 2}))
    wait_for(lambda: status(models)[1][0] == "END", what="version 1 unloaded")
    assert predict(predictions, label="stable").model_spec.version.value == 2
    with pytest.raises(grpc.RpcError) as err:
        predict(predictions, label="canary")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_reload_with_a_model_listed_twice_is_invalid_and_keeps_the_old_config(server, models):
    text = config_text(server.base, [2])
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, config)
    config.model_config_list.config.append(config.model_config_list.config[0])
    request = model_management_pb2.ReloadConfigRequest(config=config)
    with pytest.raises(grpc.RpcError) as err:
        models.HandleReloadConfigRequest(request, timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "multiple times" in err.value.details()
    assert status(models)[2][0] == "AVAILABLE"
