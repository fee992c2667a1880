"""One loaded SavedModel version: signatures, metadata and predict, through TensorFlow itself.

Sources (tensorflow/serving):
* Loading: servables/tensorflow/saved_model_bundle_factory.cc loads the MetaGraphDef tagged
  ``--saved_model_tags`` (default ``serve``); a directory without ``saved_model.pb`` fails with
  NOT_FOUND ("Could not find SavedModel .pb or .pbtxt at supplied export directory path").
  The stand-in loads with ``tf.saved_model.load`` and reads the MetaGraphDef's ``signature_def``
  map from ``saved_model.pb`` so metadata and dtypes are exactly what the C++ loader sees.
* Metadata: servables/tensorflow/get_model_metadata_impl.cc (``model_spec`` name + version and
  ``metadata["signature_def"]`` = ``SignatureDefMap`` of every signature in the MetaGraphDef).
* Predict: servables/tensorflow/predict_util.cc: unknown signature -> FAILED_PRECONDITION
  ``Serving signature key "<name>" not found.``; input count mismatch -> INVALID_ARGUMENT
  ``input size does not match signature: ...``; ``output_filter`` aliases checked; response
  ``model_spec`` carries name, version and signature name.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from tests.tfserving_standin.status import ServingError, failed_precondition, invalid_argument

DEFAULT_SIGNATURE = "serving_default"


def _read_meta_graph(path: Path, tags: set[str]) -> meta_graph_pb2.MetaGraphDef:
    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise ServingError(
            "NOT_FOUND",
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}. "
            "Check that the directory exists and that you have the right permissions for "
            "accessing it.",
        )
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(pb.read_bytes())
    except Exception as exc:  # DecodeError: a truncated or half-copied file
        raise ServingError("DATA_LOSS", f"Can't parse {pb} as binary proto") from exc
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == tags:
            return meta_graph
    available = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise ServingError(
        "NOT_FOUND",
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(tags))} }}. "
        f"To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        f"`saved_model_cli` (available: {available})",
    )


class Servable:
    """A SavedModel version loaded in this process."""

    def __init__(self, name: str, version: int, path: Path, tags: set[str]):
        self.name = name
        self.version = version
        self.path = path
        self.meta_graph = _read_meta_graph(path, tags)
        self._loaded = tf.saved_model.load(str(path), tags=sorted(tags))
        self._lock = threading.Lock()
        self._functions: dict[str, object] = {}

    # -- metadata ---------------------------------------------------------------------------
    @property
    def signature_defs(self):
        return self.meta_graph.signature_def

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        out = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in self.signature_defs.items():
            out.signature_def[key].CopyFrom(sig)
        return out

    def input_infos(self, signature_name: str, *, rest: bool):
        """Inputs of a signature; REST and gRPC word an unknown signature differently."""
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            if rest:  # http_rest_api_handler.cc GetInfoMap
                raise invalid_argument(
                    f'Serving signature name: "{name}" not found in signature def'
                )
            raise failed_precondition(f'Serving signature key "{name}" not found.')
        return self.signature_defs[name].inputs

    # -- predict ----------------------------------------------------------------------------
    def _function(self, name: str):
        with self._lock:
            fn = self._functions.get(name)
            if fn is None:
                try:
                    fn = self._loaded.signatures[name]
                except KeyError as exc:
                    raise failed_precondition(f'Serving signature key "{name}" not found.') from exc
                self._functions[name] = fn
            return fn

    def predict(
        self, signature_name: str, inputs: dict[str, np.ndarray], output_filter=()
    ) -> dict[str, np.ndarray]:
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            raise failed_precondition(f'Serving signature key "{name}" not found.')
        sig = self.signature_defs[name]
        expected = set(sig.inputs)
        sent = set(inputs)
        if len(sent) > len(expected) or (len(sent) < len(expected) and not sig.defaults):
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
            )
        if sent - expected:
            raise invalid_argument(
                f"input tensor alias not found in signature: {','.join(sorted(sent - expected))}. "
                f"Inputs expected to be in the set {{{','.join(sorted(expected))}}}."
            )
        seen: set[str] = set()
        for alias in output_filter:
            if alias not in sig.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be "
                    f"in the set {{{','.join(sorted(sig.outputs))}}}."
                )
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        tensors = {}
        for key, value in inputs.items():
            dtype = tf.dtypes.as_dtype(sig.inputs[key].dtype)
            if value.dtype != dtype.as_numpy_dtype and dtype != tf.string:
                raise invalid_argument(
                    f"Expects arg[{sorted(sig.inputs).index(key)}] to be {dtype.name} but "
                    f"{tf.dtypes.as_dtype(value.dtype).name} is provided"
                )
            tensors[key] = tf.constant(value, dtype=dtype)
        fn = self._function(name)
        try:
            result = fn(**tensors)
        except (ValueError, TypeError) as exc:
            raise invalid_argument(str(exc)) from exc
        except tf.errors.OpError as exc:
            from tests.tfserving_standin.status import from_exception

            raise from_exception(exc) from exc
        wanted = list(output_filter) or list(sig.outputs)
        return {alias: result[alias].numpy() for alias in wanted}
