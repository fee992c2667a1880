"""Errors as TF Serving reports them: a tensorflow.error.Code plus a message.

Sources (tensorflow/serving):
* HTTP status for each code: model_servers/http_server.cc ``ToHTTPStatusCode`` (INVALID_ARGUMENT,
  FAILED_PRECONDITION, OUT_OF_RANGE -> 400; NOT_FOUND -> 404; ALREADY_EXISTS, ABORTED -> 409;
  UNIMPLEMENTED -> 501; UNAVAILABLE -> 503; UNKNOWN, INTERNAL, DATA_LOSS -> 500; ...).
* REST error body: util/json_tensor.cc ``MakeJsonFromStatus`` -> ``{"error": "<message>"}``.
* gRPC status: model_servers/grpc_status_util.cc ``ToGRPCStatus`` (same code, same message).
* Status in model status JSON: util/status_util.cc ``ToStatusProto`` -> ``StatusProto``
  (``error_code`` enum name, ``error_message``).
"""

from __future__ import annotations

import grpc

# tensorflow/core/protobuf/error_codes.proto, name -> HTTP status (http_server.cc).
HTTP_STATUS: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A non-OK tensorflow::Status: ``code`` is the error_codes.proto name."""

    def __init__(self, code: str, message: str):
        if code not in HTTP_STATUS or code == "OK":
            raise ValueError(f"not an error code: {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.code]

    def __repr__(self) -> str:
        return f"ServingError({self.code}, {self.message!r})"


def error_code_value(name: str) -> int:
    """The tensorflow.error.Code enum number of a code name (StatusProto.error_code)."""
    from tensorflow.core.protobuf import error_codes_pb2

    return error_codes_pb2.Code.Value(name)


def invalid_argument(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)


def failed_precondition(message: str) -> ServingError:
    return ServingError("FAILED_PRECONDITION", message)


def from_exception(exc: BaseException) -> ServingError:
    """Map an exception raised while loading or running a SavedModel to a status."""
    if isinstance(exc, ServingError):
        return exc
    try:
        import tensorflow as tf

        if isinstance(exc, tf.errors.OpError):
            # The OpError subclass names the code (tf.errors has no public code -> class map).
            code = type(exc).__name__
            # NotFoundError -> NOT_FOUND, InvalidArgumentError -> INVALID_ARGUMENT, ...
            name = {
                "CancelledError": "CANCELLED",
                "UnknownError": "UNKNOWN",
                "InvalidArgumentError": "INVALID_ARGUMENT",
                "DeadlineExceededError": "DEADLINE_EXCEEDED",
                "NotFoundError": "NOT_FOUND",
                "AlreadyExistsError": "ALREADY_EXISTS",
                "PermissionDeniedError": "PERMISSION_DENIED",
                "ResourceExhaustedError": "RESOURCE_EXHAUSTED",
                "FailedPreconditionError": "FAILED_PRECONDITION",
                "AbortedError": "ABORTED",
                "OutOfRangeError": "OUT_OF_RANGE",
                "UnimplementedError": "UNIMPLEMENTED",
                "InternalError": "INTERNAL",
                "UnavailableError": "UNAVAILABLE",
                "DataLossError": "DATA_LOSS",
                "UnauthenticatedError": "UNAUTHENTICATED",
            }.get(code, "UNKNOWN")
            return ServingError(name, exc.message)
    except ImportError:  # pragma: no cover - TensorFlow is always present in the stand-in
        pass
    if isinstance(exc, FileNotFoundError | OSError):
        return ServingError("NOT_FOUND", str(exc))
    if isinstance(exc, ValueError | TypeError):
        return ServingError("INVALID_ARGUMENT", str(exc))
    return ServingError("UNKNOWN", f"{type(exc).__name__}: {exc}")
