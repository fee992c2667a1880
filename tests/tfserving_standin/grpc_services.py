"""gRPC on ``--port`` (127.0.0.1 only): tensorflow.serving.PredictionService and ModelService.

The servicer base classes and registration functions are the real ones generated from
tensorflow_serving/apis/*.proto (``prediction_service_pb2_grpc``, ``model_service_pb2_grpc``).

Sources (tensorflow/serving):
* model_servers/prediction_service_impl.cc + servables/tensorflow/predict_impl.cc /
  predict_util.cc: Predict resolves ``model_spec`` (version / version_label / latest), runs the
  signature (default ``serving_default``), honours ``output_filter``, and answers outputs plus
  ``model_spec {name, version, signature_name}``. Output tensors are filled field-wise
  (``Tensor::AsProtoField``: float_val, int64_val, ...), as the real server does by default.
* servables/tensorflow/get_model_metadata_impl.cc: ``metadata_field`` must be given and only
  ``signature_def`` is supported (INVALID_ARGUMENT otherwise).
* model_servers/model_service_impl.cc: GetModelStatus as REST; HandleReloadConfigRequest accepts
  only a ModelConfigList, calls ServerCore::ReloadConfig (replaces the whole config; waits only
  for *new* models) and returns its status both as the gRPC status and in
  ``ReloadConfigResponse.status``.
* model_servers/grpc_status_util.cc: a tensorflow::Status becomes the same gRPC code + message.
* Classify / Regress (classifier.cc, regressor.cc): ``input`` (example list, with or without
  context) through the named signature; the response carries ``model_spec`` and ``result``
  (tfserving_standin.inference). MultiInference answers UNIMPLEMENTED in the stand-in.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.tfserving_standin import inference
from tests.tfserving_standin.core import ServerCore
from tests.tfserving_standin.servable import DEFAULT_SIGNATURE
from tests.tfserving_standin.status import (
    ServingError,
    error_code_value,
    from_exception,
    invalid_argument,
)

log = logging.getLogger("tfserving_standin")


def _spec(model_spec) -> tuple[str, int | None, str | None]:
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    label = model_spec.version_label if choice == "version_label" else None
    return model_spec.name, version, label


def _abort(context: grpc.ServicerContext, err: ServingError):
    context.abort(err.grpc_code, err.message)


def _as_proto_field(arr: np.ndarray) -> tensor_pb2.TensorProto:
    dtype = tf.dtypes.as_dtype(arr.dtype) if arr.dtype.kind != "O" else tf.string
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    for size in arr.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = arr.ravel()
    if dtype == tf.float32:
        proto.float_val.extend(flat.tolist())
    elif dtype == tf.float64:
        proto.double_val.extend(flat.tolist())
    elif dtype in (tf.int32, tf.int16, tf.int8, tf.uint8):
        proto.int_val.extend(flat.tolist())
    elif dtype == tf.int64:
        proto.int64_val.extend(flat.tolist())
    elif dtype == tf.bool:
        proto.bool_val.extend(flat.tolist())
    elif dtype == tf.string:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    else:
        return tf.make_tensor_proto(arr)
    return proto


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServerCore):
        self.core = core

    def Predict(self, request: predict_pb2.PredictRequest, context):
        try:
            servable = self.core.servable(*_spec(request.model_spec))
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            try:
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            except Exception as exc:
                raise invalid_argument(f"Failed to parse input tensor: {exc}") from exc
            outputs = servable.predict(signature, inputs, list(request.output_filter))
        except ServingError as err:
            _abort(context, err)
        except Exception as exc:
            _abort(context, from_exception(exc))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(_as_proto_field(np.asarray(value)))
        return response

    def _example_method(self, request, context, run, response):
        try:
            servable = self.core.servable(*_spec(request.model_spec))
            result = run(servable, request.model_spec.signature_name, request.input)
        except ServingError as err:
            _abort(context, err)
        except Exception as exc:  # a TF error while running the signature
            _abort(context, from_exception(exc))
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        response.result.CopyFrom(result)
        return response

    def Classify(self, request: classification_pb2.ClassificationRequest, context):
        return self._example_method(
            request, context, inference.classify, classification_pb2.ClassificationResponse()
        )

    def Regress(self, request: regression_pb2.RegressionRequest, context):
        return self._example_method(
            request, context, inference.regress, regression_pb2.RegressionResponse()
        )

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
        try:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            if not request.metadata_field:
                raise invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != "signature_def":
                    raise invalid_argument(f"Metadata field {field} is not supported")
            servable = self.core.servable(*_spec(request.model_spec))
        except ServingError as err:
            _abort(context, err)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_def_map())
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServerCore):
        self.core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        try:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            name, version, _label = _spec(request.model_spec)  # label ignored, as upstream
            statuses = self.core.model_status(name, version)
        except ServingError as err:
            _abort(context, err)
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, status in statuses:
            entry = response.model_version_status.add(version=number)
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
            entry.status.SetInParent()  # always set, OK included (ToStatusProto)
            if status.error is not None:
                entry.status.error_code = error_code_value(status.error.code)
                entry.status.error_message = status.error.message
        return response

    def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest, context):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                    "ModelConfigList is currently supported"
                )
            self.core.reload_config(request.config, wait_timeout=context.time_remaining())
        except ServingError as err:
            log.error("ReloadConfig failed: %s", err.message)
            response.status.error_code = error_code_value(err.code)
            response.status.error_message = err.message
            context.set_code(err.grpc_code)
            context.set_details(err.message)
            return response
        return response


def make_server(core: ServerCore, port: int) -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="standin-grpc"),
        options=[
            ("grpc.max_receive_message_length", 2**31 - 1),
            ("grpc.max_send_message_length", 2**31 - 1),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        raise OSError(f"could not bind gRPC port 127.0.0.1:{port}")
    server.start()
    return server, bound
