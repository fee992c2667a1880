"""Talking to TensorFlow Serving over its real APIs: REST `/v1/models/...` and gRPC
`PredictionService` / `ModelService` (from tensorflow-serving-api).

Every call has a timeout; connection failures are retried a bounded number of times with
exponential backoff; errors name the URL (credentials masked: `tfship.redact`) and what to
check. Readiness is polled against a
deadline, since `HandleReloadConfigRequest` returns before new versions are loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import requests

from tfship.errors import InfraError
from tfship.redact import redact_text, redact_url
from tfship.serving.wire import ExampleMethods, json_tensor, version_path

log = logging.getLogger(__name__)
T = TypeVar("T")


class ServerAnswered(InfraError):
    """The server replied with an error status (`{"error": ...}` body); not retried."""

    def __init__(self, message: str, *, status: int, error: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.error = error


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # START | LOADING | AVAILABLE | UNLOADING | END
    error_code: str
    error_message: str


class ServingClient(ExampleMethods):
    """One model on one TF Serving instance (`:classify`/`:regress`: ExampleMethods)."""

    def __init__(
        self,
        model: str,
        *,
        rest_url: str | None,
        grpc_target: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.model = model
        self.rest_url = rest_url.rstrip("/") if rest_url else None
        self.shown_url = redact_url(self.rest_url) if self.rest_url else None  # for messages
        self.grpc_target = grpc_target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._session = requests.Session()
        self._channel: Any = None

    # ---- plumbing -------------------------------------------------------------------------
    def _retrying(
        self,
        what: str,
        where: str,
        fn: Callable[[], T],
        transient: Callable[[Exception], bool],
        hint: str,
    ) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                if isinstance(exc, ServerAnswered) or not transient(exc):
                    raise
                if attempt >= self.retries:
                    raise InfraError(
                        f"{what} {where} failed after {attempt + 1} attempt(s): "
                        f"{type(exc).__name__}: {redact_text(str(exc))[:300]}",
                        hint=hint,
                    ) from exc
                delay = self.backoff * (2**attempt)
                log.warning("%s %s: %s; retrying in %.1fs", what, where, type(exc).__name__, delay)
                time.sleep(delay)
                attempt += 1

    def _rest(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        if not self.rest_url:
            raise InfraError(
                "no TF Serving REST URL configured",
                hint="set serving.rest_url (TFSHIP_SERVING_REST_URL) or the "
                "environment's rest_url in pipeline.yaml",
            )
        url = f"{self.rest_url}{path}"
        shown = f"{self.shown_url}{path}"

        def call() -> Any:
            resp = self._session.request(method, url, json=body, timeout=timeout or self.timeout)
            if resp.status_code in (502, 503, 504):  # a proxy in front of a restarting server
                raise requests.ConnectionError(f"HTTP {resp.status_code}")
            try:
                data = resp.json()
            except ValueError:
                data = {"error": resp.text[:300]}
            if resp.status_code >= 400:
                err = data.get("error", str(data)) if isinstance(data, dict) else str(data)
                raise ServerAnswered(
                    f"{method} {shown} -> HTTP {resp.status_code}: {redact_text(str(err))}",
                    status=resp.status_code,
                    error=err,
                    hint="check the model name, version/label and request against "
                    f"`GET {self.shown_url}/v1/models/{self.model}/metadata`",
                )
            return data

        return self._retrying(
            method,
            shown,
            call,
            lambda e: isinstance(e, requests.ConnectionError | requests.Timeout),
            hint=f"is TF Serving running and reachable at {self.shown_url} (--rest_api_port)? "
            "check the URL, network policy and the server's logs",
        )

    def _grpc(self, what: str, fn: Callable[[Any], T]) -> T:
        if not self.grpc_target:
            raise InfraError(
                f"{what} needs TF Serving's gRPC API but no gRPC target is configured",
                hint="set serving.grpc_target (TFSHIP_SERVING_GRPC_TARGET), e.g. "
                "tfs:8500 (--port of tensorflow_model_server)",
            )
        import grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_target)

        def transient(exc: Exception) -> bool:
            return isinstance(exc, grpc.RpcError) and exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )

        def call() -> T:
            try:
                return fn(self._channel)
            except grpc.RpcError as exc:
                if transient(exc):
                    raise
                raise ServerAnswered(
                    f"{what} at {self.grpc_target}: {exc.code().name}: {exc.details()}",
                    status=exc.code().value[0],
                    error=exc.details() or "",
                    hint="see the server's logs for the full error",
                ) from exc

        return self._retrying(
            what,
            f"at {self.grpc_target}",
            call,
            transient,
            hint=f"is TF Serving's gRPC port reachable at {self.grpc_target} (--port)?",
        )

    def close(self) -> None:
        self._session.close()
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # ---- model status ---------------------------------------------------------------------
    def status(self) -> list[VersionStatus]:
        """Every version the server knows for this model. An unknown model is an empty list."""
        try:
            data = self._rest("GET", f"/v1/models/{self.model}")
        except ServerAnswered as exc:
            if exc.status == 404:
                return []
            raise
        return [
            VersionStatus(
                int(v["version"]),
                v.get("state", ""),
                v.get("status", {}).get("error_code", "OK"),
                v.get("status", {}).get("error_message", ""),
            )
            for v in data.get("model_version_status", [])
        ]

    def status_grpc(self) -> list[VersionStatus]:
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = self.model

        def call(ch: Any) -> Any:
            return model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(
                req, timeout=self.timeout
            )

        resp = self._grpc("GetModelStatus", call)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [
            VersionStatus(
                int(v.version),
                states.Name(v.state),
                str(v.status.error_code),
                v.status.error_message,
            )
            for v in resp.model_version_status
        ]

    def metadata(self, version: int | None = None) -> dict[str, Any]:
        return self._rest("GET", f"/v1/models/{self.model}{version_path(version, None)}/metadata")

    def label_version(self, label: str) -> int | None:
        """The version `label` resolves to on this server (`GET .../labels/<l>/metadata`,
        model_spec.version); None while the server has no such label (an error answer)."""
        try:
            data = self._rest("GET", f"/v1/models/{self.model}{version_path(None, label)}/metadata")
        except ServerAnswered:
            return None
        version = (data.get("model_spec") or {}).get("version") if isinstance(data, dict) else None
        return int(version) if version not in (None, "") else None

    def wait_available(
        self,
        versions: Iterable[int],
        *,
        deadline: float,
        poll: float = 0.5,
        gone: Iterable[int] = (),
    ) -> float:
        """Poll until every version in `versions` is AVAILABLE (and `gone` ones are not).

        Fails fast when a version reaches END with an error (TF Serving gave up loading it).
        Returns the seconds waited.
        """
        want, unwanted = set(versions), set(gone)
        t0 = time.monotonic()
        last: dict[int, VersionStatus] = {}
        while True:
            last = {s.version: s for s in self.status()}
            failed = {
                v: s
                for v, s in last.items()
                if v in want and s.state == "END" and s.error_code not in ("OK", "0", "")
            }
            if failed:
                v, s = next(iter(failed.items()))
                raise ServerAnswered(
                    f"TF Serving could not load {self.model} version {v}: {s.error_code}: "
                    f"{s.error_message}",
                    status=500,
                    error=s.error_message,
                    hint="the SavedModel is broken or incompatible with the server's TensorFlow; "
                    "run `tfship validate` on the export",
                )
            ready = all(last.get(v) and last[v].state == "AVAILABLE" for v in want)
            dropped = all(v not in last or last[v].state in ("END", "UNLOADING") for v in unwanted)
            if ready and dropped:
                return time.monotonic() - t0
            if time.monotonic() - t0 > deadline:
                seen = {v: s.state for v, s in sorted(last.items())}
                raise InfraError(
                    f"{self.shown_url}/v1/models/{self.model}: versions {sorted(want)} "
                    f"not AVAILABLE after {deadline:.0f}s (server reports {seen or 'no versions'})",
                    hint="check the server can read the model repository (base_path in "
                    "models.config) and its logs; raise serving.load_deadline_seconds "
                    "for big models",
                )
            time.sleep(poll)

    # ---- config ---------------------------------------------------------------------------
    def reload_config(self, config: Any) -> None:
        """ModelService/HandleReloadConfigRequest: replaces the server's whole config."""
        from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

        req = model_management_pb2.ReloadConfigRequest()
        req.config.CopyFrom(config)

        def call(ch: Any) -> Any:
            return model_service_pb2_grpc.ModelServiceStub(ch).HandleReloadConfigRequest(
                req, timeout=self.timeout
            )

        resp = self._grpc("HandleReloadConfigRequest", call)
        if resp.status.error_code != 0:
            raise ServerAnswered(
                f"TF Serving at {self.grpc_target} rejected the new config: "
                f"{resp.status.error_message}",
                status=400,
                error=resp.status.error_message,
                hint="a label may only point at an AVAILABLE version; see the server log",
            )

    # ---- predict --------------------------------------------------------------------------
    def predict(
        self,
        inputs: Mapping[str, Any],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = "serving_default",
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Columnar REST predict (`inputs` -> `outputs`) at a version or label. String inputs
        are sent as JSON strings, bytes that are not UTF-8 as `{"b64": ...}`."""
        body = {
            "signature_name": signature,
            "inputs": {k: json_tensor(v) for k, v in inputs.items()},
        }
        data = self._rest(
            "POST",
            f"/v1/models/{self.model}{version_path(version, label)}:predict",
            body,
            timeout=timeout,
        )
        outputs = data["outputs"]
        if not isinstance(outputs, dict):  # a single-output signature returns the bare tensor
            outputs = {"output_0": outputs}
        return {k: np.asarray(v) for k, v in outputs.items()}

    def predict_grpc(self, request: Any, *, version: int | None = None) -> Any:
        """PredictionService/Predict with a ready PredictRequest (e.g. a warmup record)."""
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        request.model_spec.name = self.model
        if version is not None:
            request.model_spec.version.value = version

        def call(ch: Any) -> Any:
            return prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
                request, timeout=self.timeout
            )

        return self._grpc("Predict", call)
