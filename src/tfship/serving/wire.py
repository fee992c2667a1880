"""TF Serving's request encodings, shared by the REST and gRPC client calls.

* REST tensors (util/json_tensor.cc): nested lists; DT_STRING values as JSON strings, or as
  `{"b64": ...}` when the bytes are not UTF-8 (JSON text must be valid UTF-8).
* tf.Example rows (the `examples` of `:classify`/`:regress`, and `input.example_list` of the
  gRPC Classify/Regress): per feature one value or a list; float -> float_list, int/bool ->
  int64_list, str/bytes/`{"b64": ...}` -> bytes_list, as TF Serving's JSON parser maps them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfship.errors import DataError, InfraError
from tfship.features_io import json_text


def json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return json_text(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_tensor(value: Any) -> Any:
    """A tensor as TF Serving's REST JSON: nested lists; strings as text or {"b64": ...}."""
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        return np.vectorize(json_value, otypes=[object])(arr).tolist() if arr.size else []
    return arr.tolist()


def json_example(row: Mapping[str, Any]) -> dict[str, Any]:
    """A tf.Example row for REST `examples`: bytes as text or {"b64": ...}, numpy scalars and
    arrays as Python values (a float keeps its decimal point in JSON: 7.0, a float feature)."""
    out = {}
    for name, content in row.items():
        if isinstance(content, np.ndarray):
            content = content.tolist()
        if isinstance(content, list):
            out[name] = [json_value(v) for v in content]
        else:
            out[name] = json_value(content)
    return out


def _kind(value: Any, name: str) -> tuple[str, Any]:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int):
        return "int64_list", int(value)
    if isinstance(value, float):
        return "float_list", value
    if isinstance(value, str):
        return "bytes_list", value.encode("utf-8")
    if isinstance(value, bytes):
        return "bytes_list", value
    if isinstance(value, Mapping) and set(value) == {"b64"}:
        return "bytes_list", base64.b64decode(value["b64"])
    raise DataError(
        f"tf.Example feature '{name}': found {type(value).__name__} {str(value)[:40]!r}; "
        'expected a float, an int, a string, bytes or {"b64": ...}',
        hint="write each feature as one value or a list of values of one kind",
    )


def example_proto(row: Mapping[str, Any]) -> Any:
    """One tf.Example JSON row (TF Serving's REST `examples` format) as a tf.train.Example."""
    from tensorflow.core.example import example_pb2

    out = example_pb2.Example()
    for name, content in row.items():
        values = content.tolist() if isinstance(content, np.ndarray) else content
        values = values if isinstance(values, list) else [values]
        kinds = [_kind(v, name) for v in values]
        found = {k for k, _ in kinds}
        if len(found) > 1:
            raise DataError(
                f"tf.Example feature '{name}' mixes {sorted(found)}; expected one kind",
                hint="a feature is all floats (with a decimal point), all ints or all strings",
            )
        feature = out.features.feature[name]
        if kinds:
            getattr(feature, kinds[0][0]).value.extend(v for _, v in kinds)
    return out


def example_request(method: str, rows: list[Mapping[str, Any]], signature: str) -> Any:
    """A ClassificationRequest / RegressionRequest carrying `rows` as `input.example_list`."""
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    if method == "classify":
        request: Any = classification_pb2.ClassificationRequest()
    else:
        request = regression_pb2.RegressionRequest()
    request.model_spec.signature_name = signature
    for row in rows:
        request.input.example_list.examples.add().CopyFrom(example_proto(row))
    return request


def version_path(version: int | None, label: str | None) -> str:
    if version is not None:
        return f"/versions/{version}"
    if label is not None:
        return f"/labels/{label}"
    return ""


class ExampleMethods:
    """TF Serving's tf.Example APIs, `:classify` and `:regress`, over REST and gRPC; mixed into
    ServingClient, whose `_rest`/`_grpc` give timeouts, retries and ServerAnswered errors."""

    model: str
    timeout: float
    _rest: Any
    _grpc: Any

    def classify(
        self,
        examples: list[Mapping[str, Any]],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = "classify",
        context: Mapping[str, Any] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """REST `:classify` on tf.Example JSON (`examples`, TF Serving's format: write float
        features with a decimal point); per example the (label, score) pairs."""
        return self._example_method("classify", examples, version, label, signature, context)

    def regress(
        self,
        examples: list[Mapping[str, Any]],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = "regress",
        context: Mapping[str, Any] | None = None,
    ) -> list[float]:
        """REST `:regress` on tf.Example JSON; one value per example."""
        return self._example_method("regress", examples, version, label, signature, context)

    def _example_method(
        self,
        method: str,
        examples: list[Mapping[str, Any]],
        version: int | None,
        label: str | None,
        signature: str,
        context: Mapping[str, Any] | None,
    ) -> Any:
        body: dict[str, Any] = {
            "signature_name": signature,
            "examples": [json_example(row) for row in examples],
        }
        if context is not None:
            body["context"] = json_example(context)
        data = self._rest(
            "POST", f"/v1/models/{self.model}{version_path(version, label)}:{method}", body
        )
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise InfraError(
                f":{method} answered without a 'results' list: {str(data)[:200]}",
                hint="is the URL a TF Serving REST API (--rest_api_port)?",
            )
        if method == "classify":
            return [[(str(c[0]), float(c[1])) for c in row] for row in results]
        return [float(v) for v in results]

    def example_method_grpc(self, method: str, request: Any, *, version: int | None = None) -> Any:
        """PredictionService/Classify or /Regress with a ready request (a warmup record)."""
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        request.model_spec.name = self.model
        if version is not None:
            request.model_spec.version.value = version
        rpc = "Classify" if method == "classify" else "Regress"

        def call(ch: Any) -> Any:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            return getattr(stub, rpc)(request, timeout=self.timeout)

        return self._grpc(rpc, call)

    def classify_grpc(
        self,
        examples: list[Mapping[str, Any]],
        *,
        version: int | None = None,
        signature: str = "classify",
    ) -> list[list[tuple[str, float]]]:
        """PredictionService/Classify on tf.Example rows; the same answer as `classify`."""
        request = example_request("classify", examples, signature)
        resp = self.example_method_grpc("classify", request, version=version)
        return [
            [(c.label, float(c.score)) for c in row.classes] for row in resp.result.classifications
        ]

    def regress_grpc(
        self,
        examples: list[Mapping[str, Any]],
        *,
        version: int | None = None,
        signature: str = "regress",
    ) -> list[float]:
        """PredictionService/Regress on tf.Example rows; one value per example."""
        request = example_request("regress", examples, signature)
        resp = self.example_method_grpc("regress", request, version=version)
        return [float(r.value) for r in resp.result.regressions]
