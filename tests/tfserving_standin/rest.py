"""The REST API on ``--rest_api_port`` (127.0.0.1 only).

Sources (tensorflow/serving): g3doc/api_rest.md; model_servers/http_rest_api_handler.cc
(dispatch, status, metadata, predict), http_rest_api_util.cc (path regexes, URL-decoding of model
name and label, "Both model version ... and model version label ... cannot be supplied"),
http_server.cc (only paths matching ``(?i)/v1/.*`` are handled; status -> HTTP code; the error
body is written for failures too; ``Content-Type: application/json``).

Routes, case-insensitive as in the real regexes:
* ``GET  /v1/models/<m>[/versions/<v>|/labels/<l>]`` -> GetModelStatus JSON
  (``{"model_version_status": [{"version": "3", "state": "AVAILABLE",
  "status": {"error_code": "OK", "error_message": ""}}]}``, proto3 JSON with default fields).
* ``GET  /v1/models/<m>[/versions/<v>|/labels/<l>]/metadata`` -> ``{"model_spec": {"name",
  "signature_name": "", "version"}, "metadata": {"signature_def": {"signature_def": {...}}}}``.
* ``POST /v1/models/<m>[/versions/<v>|/labels/<l>]:predict`` -> json_tensor.
* Any other /v1 path or method -> 400 ``Malformed request: <METHOD> <path>``;
  ``GET /v1/models`` -> 400 ``Missing model name in request.``.
* ``POST ...:classify`` / ``...:regress`` -> tf.Example JSON in, ``{"results": ...}`` out
  (tfserving_standin.inference).
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_status_pb2

from tests.tfserving_standin import inference, json_tensor
from tests.tfserving_standin.core import ServerCore
from tests.tfserving_standin.status import ServingError, error_code_value, invalid_argument

log = logging.getLogger("tfserving_standin")

PREDICTION_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
V1_RE = re.compile(r"/v1/.*", re.IGNORECASE)


def _spec(name: str, version: str | None, label: str | None):
    model = urllib.parse.unquote(name) if name else ""
    number = None
    if version:
        number = int(version)
        if number >= 2**63:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
    label = urllib.parse.unquote(label) if label else None
    if number is not None and label is not None:  # unreachable with these regexes; kept as real
        raise invalid_argument(
            f"Both model version ({number}) and model version label ({label}) cannot be supplied."
        )
    return model, number, label


def status_json(core: ServerCore, model: str, version: int | None) -> dict:
    response = get_model_status_pb2.GetModelStatusResponse()
    for number, status in core.model_status(model, version):
        entry = response.model_version_status.add()
        entry.version = number
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
        entry.status.SetInParent()  # always set, OK included (ToStatusProto)
        if status.error is not None:
            entry.status.error_code = error_code_value(status.error.code)
            entry.status.error_message = status.error.message
    return json_format.MessageToDict(
        response, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def metadata_json(core: ServerCore, model: str, version: int | None, label: str | None) -> dict:
    servable = core.servable(model, version, label)
    sig_map = json_format.MessageToDict(
        servable.signature_def_map(),
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
    )
    return {
        "model_spec": {
            "name": servable.name,
            "signature_name": "",
            "version": str(servable.version),
        },
        "metadata": {"signature_def": sig_map},
    }


def predict_json(core: ServerCore, model: str, version, label, body: bytes) -> dict:
    # Order as in ProcessPredictRequest: parse the body, then look the servable up for the
    # signature's input map (GetInfoMap), then run.
    doc = json_tensor.parse_json(body)
    servables = []

    def input_infos(signature_name: str):
        servable = core.servable(model, version, label)
        servables.append(servable)
        return servable.input_infos(signature_name, rest=True)

    signature, fmt, inputs = json_tensor.request_tensors(doc, input_infos)
    outputs = servables[0].predict(signature, inputs)
    return json_tensor.response_json(outputs, fmt)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tfserving-standin"
    core: ServerCore  # set on the subclass made by make_server

    def log_message(self, fmt, *args):  # keep test output quiet; errors are logged below
        log.debug("%s - %s", self.address_string(), fmt % args)

    def _reply(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(self.path).path
        if not V1_RE.fullmatch(path):
            self._reply(404, b"", "text/html")  # evhttp: no handler registered for the path
            return
        try:
            result = self._route(self.command, path, body)
        except ServingError as err:
            if err.http_status >= 500:
                log.error("%s %s -> %s", self.command, path, err)
            self._reply(err.http_status, json_tensor.dumps({"error": err.message}))
            return
        except Exception as exc:  # a stand-in bug must still answer like a server error
            log.exception("unexpected error for %s %s", self.command, path)
            self._reply(500, json_tensor.dumps({"error": f"{type(exc).__name__}: {exc}"}))
            return
        self._reply(200, json_tensor.dumps(result))

    def _route(self, method: str, path: str, body: bytes) -> dict:
        malformed = invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            match = PREDICTION_RE.fullmatch(path)
            if not match:
                raise malformed
            model, version, label = _spec(*match.group(1, 2, 3))
            method = match.group(4).lower()
            if method == "predict":
                return predict_json(self.core, model, version, label, body)
            # ProcessClassifyRequest / ProcessRegressRequest: parse the body, then resolve.
            signature, request = inference.request_from_json(body, method)
            servable = self.core.servable(model, version, label)
            if method == "classify":
                return inference.classification_json(
                    inference.classify(servable, signature, request)
                )
            return inference.regression_json(inference.regress(servable, signature, request))
        if method == "GET":
            match = STATUS_RE.fullmatch(path)
            if not match:
                raise malformed
            model, version, label = _spec(*match.group(1, 2, 3))
            if not model:
                raise invalid_argument("Missing model name in request.")
            if match.group(4):
                return metadata_json(self.core, model, version, label)
            # GetModelStatusImpl ignores model_spec.version_label: all versions are returned.
            return status_json(self.core, model, version)
        raise malformed

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch


def make_server(core: ServerCore, port: int) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"core": core})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="standin-rest", daemon=True)
    thread.start()
    return thread
