"""Classify and Regress on serialized tf.Example, as TF Serving answers them (REST and gRPC).

Sources (tensorflow/serving):
* util/json_tensor.cc ``FillClassifyRegressRequestFromJson`` / ``MakeExampleFromJsonObject`` /
  ``AddValueToFeature``: optional ``context`` object, required non-empty ``examples`` list of
  objects; a JSON number with a decimal point is a float feature, without one an int64 feature,
  a string (or ``{"b64": ...}``) a bytes feature, true/false int64; a list gives several values;
  null, nested lists and mixed kinds are INVALID_ARGUMENT with the messages used below.
* util/json_tensor.cc ``MakeJsonFromClassificationResult`` / ``MakeJsonFromRegressionResult``:
  ``{"results": [[[label, score], ...], ...]}`` and ``{"results": [value, ...]}``.
* servables/tensorflow/classifier.cc / regressor.cc ``PreProcess*`` with the server's default
  flags (``--enable_signature_method_name_check`` off, so a TF2 predict-method signature is
  accepted): exactly one input, named ``inputs``; classify: one or two outputs among
  ``classes`` (DT_STRING) and ``scores`` (DT_FLOAT); regress: one output, ``outputs``.
* util.cc ``InputToSerializedExampleTensor``: with a context, each example is the context's
  features merged with the example's (the example wins).
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from tests.tfserving_standin import json_tensor
from tests.tfserving_standin.servable import DEFAULT_SIGNATURE, Servable
from tests.tfserving_standin.status import ServingError, invalid_argument

INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"


# --- JSON -> Input ---------------------------------------------------------------------------


def _kind_error(name: str, feature: feature_pb2.Feature) -> ServingError:
    kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind") or "", "UNKNOWN"
    )
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add_value(value, name: str, feature: feature_pb2.Feature) -> None:
    kind = feature.WhichOneof("kind")

    def need(wanted: str) -> None:
        if kind not in (None, wanted):
            raise _kind_error(name, feature)

    if (
        value is None
        or isinstance(value, list)
        or (isinstance(value, dict) and not json_tensor._is_b64(value))
    ):
        kind = json_tensor._json_type(value)
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {kind}")
    if isinstance(value, bool):
        need("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, dict):
        need("bytes_list")
        try:
            feature.bytes_list.value.append(base64.b64decode(value["b64"], validate=True))
        except ValueError as exc:
            raise invalid_argument("Unable to base64 decode") from exc
    elif isinstance(value, str):
        need("bytes_list")
        feature.bytes_list.value.append(value.encode())
    elif isinstance(value, float):
        need("float_list")
        if math.isfinite(value) and abs(value) > float(np.finfo(np.float32).max):
            raise invalid_argument(
                f"Cannot convert JSON value: {json.dumps(value)} to float without loss of "
                "precision."
            )
        feature.float_list.value.append(value)
    else:
        need("int64_list")
        if not -(2**63) <= value < 2**63:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(value)


def _example(value, out: example_pb2.Example) -> None:
    if not isinstance(value, dict):
        raise invalid_argument(
            f"Example must be JSON object but got JSON {json_tensor._json_type(value)}"
        )
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_value(item, name, feature)
        out.features.feature[name].CopyFrom(feature)


def request_from_json(body: bytes, method: str) -> tuple[str, input_pb2.Input]:
    """(signature name, Input) of a REST classify/regress body."""
    doc = json_tensor.parse_json(body)
    signature = json_tensor.signature_name(doc)
    request = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _example(doc["context"], request.example_list_with_context.context)
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {json.dumps(doc)} not formatted correctly. When method is {method}, "
            "key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(
            f"JSON Value: {json.dumps(doc)} not formatted correctly. Expecting 'examples' value "
            "to be an list/array"
        )
    if not examples:
        raise invalid_argument(
            f"JSON Value: {json.dumps(doc)} not formatted correctly. 'examples' value is an "
            "empty array"
        )
    target = (
        request.example_list_with_context.examples if has_context else request.example_list.examples
    )
    for value in examples:
        _example(value, target.add())
    return signature, request


# --- Input -> tensors -> results -------------------------------------------------------------


def serialized_examples(request: input_pb2.Input) -> list[bytes]:
    kind = request.WhichOneof("kind")
    if kind == "example_list":
        out = [e.SerializeToString() for e in request.example_list.examples]
    elif kind == "example_list_with_context":
        # util.cc appends each serialized example to the serialized context: on parse a
        # feature in both is the example's (the later map entry wins).
        context = request.example_list_with_context.context.SerializeToString()
        out = [context + e.SerializeToString() for e in request.example_list_with_context.examples]
    else:
        out = []
    if not out:
        raise invalid_argument("Input is empty.")
    return out


def _signature(servable: Servable, name: str):
    name = name or DEFAULT_SIGNATURE
    sig = servable.signature_defs.get(name)
    if sig is None:
        raise invalid_argument(f"No signature was found with the name: {name}")
    if len(sig.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    return name, sig


def _run(
    servable: Servable, name: str, request: input_pb2.Input
) -> tuple[int, dict[str, np.ndarray]]:
    examples = serialized_examples(request)
    return len(examples), servable.predict(name, {INPUTS: np.asarray(examples, dtype=object)})


def _dtype_name(value: np.ndarray) -> str:
    return types_pb2.DataType.Name(tf.as_dtype(value.dtype).as_datatype_enum)


def _shape(value: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in value.shape) + "]"  # TensorShape::DebugString


def _class_output(value: np.ndarray | None, what: str, dtype: str, n: int) -> None:
    """PostProcessClassificationResult's checks of the classes / scores tensor."""
    if value is None:
        return
    if value.ndim != 2:
        raise invalid_argument(
            f"Expected Tensor shape: [batch_size num_classes] but got {_shape(value)}"
        )
    got = "DT_STRING" if value.dtype == object else _dtype_name(value)
    if got != dtype:
        raise invalid_argument(f"Expected {what} Tensor of {dtype}. Got: {got}")
    if value.shape[0] != n:
        raise invalid_argument(f"Expected {what} output batch size of {n}. Got: {value.shape[0]}")


def classify(
    servable: Servable, signature_name: str, request: input_pb2.Input
) -> classification_pb2.ClassificationResult:
    name, sig = _signature(servable, signature_name)
    if not 1 <= len(sig.outputs) <= 2:
        raise invalid_argument(f"Expected one or two output Tensors, found {len(sig.outputs)}")
    if INPUTS not in sig.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {sig}")
    if CLASSES not in sig.outputs and SCORES not in sig.outputs:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {sig}'
        )
    n, out = _run(servable, name, request)
    classes = np.asarray(out[CLASSES]) if CLASSES in sig.outputs else None
    scores = np.asarray(out[SCORES]) if SCORES in sig.outputs else None
    _class_output(classes, "classes", "DT_STRING", n)
    _class_output(scores, "scores", "DT_FLOAT", n)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for i in range(n):
        row = result.classifications.add()
        for j in range(width):
            item = row.classes.add()
            if classes is not None:
                # A proto string field: TF Serving copies the bytes; Python needs text.
                item.label = bytes(classes[i][j]).decode("utf-8", "replace")
            if scores is not None:
                item.score = float(scores[i][j])
    return result


def regress(
    servable: Servable, signature_name: str, request: input_pb2.Input
) -> regression_pb2.RegressionResult:
    name, sig = _signature(servable, signature_name)
    if len(sig.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if INPUTS not in sig.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {sig}")
    if OUTPUTS not in sig.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {sig}")
    n, out = _run(servable, name, request)
    values = np.asarray(out[OUTPUTS])
    # PostProcessRegressionResult, in its order.
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{_shape(values)}"
        )
    if values.shape[0] != n:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {n} vs. {values.shape[0]}"
        )
    if values.dtype != np.float32:
        got = "DT_STRING" if values.dtype == object else _dtype_name(values)
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {got}")
    result = regression_pb2.RegressionResult()
    for v in values.ravel():
        result.regressions.add().value = float(v)
    return result


def classification_json(result: classification_pb2.ClassificationResult) -> dict:
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    return {
        "results": [[[c.label, c.score] for c in row.classes] for row in result.classifications]
    }


def regression_json(result: regression_pb2.RegressionResult) -> dict:
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return {"results": [r.value for r in result.regressions]}
