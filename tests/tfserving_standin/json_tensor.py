"""REST JSON <-> tensors, following TF Serving's util/json_tensor.cc.

Sources (tensorflow/serving util/json_tensor.cc, and g3doc/api_rest.md "Predict API"):
* ``ParseJson``: empty body -> ``JSON Parse error: The document is empty``; syntax error ->
  ``JSON Parse error: <rapidjson message> at offset: <n>``; NaN/Infinity literals are accepted;
  a non-object document -> ``JSON Value: ... Is not object``. All INVALID_ARGUMENT (HTTP 400).
* ``FillSignature``: ``signature_name`` must be a string.
* ``FillPredictRequestFromJson``: exactly one of ``instances`` (row) / ``inputs`` (columnar);
  neither -> ``Missing 'inputs' or 'instances' key``; ``instances`` must be a non-empty list.
* ``FillTensorMapFromInstancesList`` / ``FillTensorMapFromInputsMap`` / ``FillTensorProto`` /
  ``AddValueToTensor``: shapes from the first element, type checks, ``{"b64": ...}`` for strings.
* ``MakeRowFormatJsonFromTensors``: ``{"predictions": [...]}``; with ONE output tensor each
  prediction is the bare value (a plain list), with several it is an object keyed by output name;
  all outputs must share the batch size. ``MakeColumnarFormatJsonFromTensors``:
  ``{"outputs": <value>}`` for one output, ``{"outputs": {name: value}}`` for several.
* ``WriteDecimal``: floats are written in their shortest round-trip form; NaN / Infinity as bare
  tokens; string outputs whose name ends in ``_bytes`` as ``{"b64": ...}``.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from tests.tfserving_standin.status import ServingError, invalid_argument

ROW, COLUMNAR = "row", "columnar"

_CPP_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half"}

_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Expecting ',' delimiter": "Missing a comma or '}' after an object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
}


def _dtype_name(dtype: tf.DType) -> str:
    return _CPP_TYPE_NAMES.get(dtype.name, dtype.name)


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _dump(value) -> str:
    return json.dumps(value)


def _status_string(err: ServingError) -> str:
    return f"{err.code}: {err.message}"


def parse_json(body: bytes) -> dict:
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if isinstance(exc, UnicodeDecodeError):
            raise invalid_argument("JSON Parse error: Invalid encoding in string.") from exc
        message = _RAPIDJSON_MESSAGES.get(exc.msg, exc.msg)
        raise invalid_argument(f"JSON Parse error: {message} at offset: {exc.pos}") from exc
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_dump(doc)} Is not object")
    return doc


def signature_name(doc: dict) -> str:
    if "signature_name" not in doc:
        return ""
    if not isinstance(doc["signature_name"], str):
        raise invalid_argument(
            f"JSON Value: {_dump(doc)} not formatted correctly. 'signature_name' key must be a "
            "string value."
        )
    return doc["signature_name"]


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _dense_shape(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _add_value(value, dtype: tf.DType, out: list) -> None:
    def type_error():
        return invalid_argument(
            f"JSON Value: {_dump(value)} Type: {_json_type(value)} is not of expected type: "
            f"{_dtype_name(dtype)}"
        )

    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype.is_floating:
        if not is_number:
            raise type_error()
        if dtype != tf.float64 and math.isfinite(value):
            limit = (1 << 24) - 1
            if (isinstance(value, int) and abs(value) > limit) or (
                isinstance(value, float) and abs(value) > float(np.finfo(np.float32).max)
            ):
                raise invalid_argument(
                    f"Cannot convert JSON value: {_dump(value)} to float without loss of precision."
                )
        out.append(value)
    elif dtype.is_integer:
        if not isinstance(value, int) or isinstance(value, bool):
            raise type_error()
        if not dtype.min <= value <= dtype.max or (
            dtype.size < 4 and not -(2**31) <= value < 2**31
        ):
            raise type_error()
        out.append(value)
    elif dtype == tf.string:
        if _is_b64(value):
            try:
                out.append(base64.b64decode(value["b64"], validate=True))
            except ValueError as exc:
                raise invalid_argument("Unable to base64 decode") from exc
        elif isinstance(value, str):
            out.append(value.encode())
        elif isinstance(value, dict):
            raise invalid_argument(
                f"JSON Value: {_dump(value)} not formatted correctly for base64 data"
            )
        else:
            raise type_error()
    elif dtype == tf.bool:
        if not isinstance(value, bool):
            raise type_error()
        out.append(value)
    else:
        raise ServingError(
            "UNIMPLEMENTED",
            f"Conversion of JSON Value: {_dump(value)} to type: {_dtype_name(dtype)}",
        )


def _fill(value, level: int, shape: list[int], dtype: tf.DType, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {_dump(value)} found at incorrect level: {level + 1} in the JSON "
                f"DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict) and dtype != tf.string:
            raise invalid_argument(
                f"JSON Value: {_dump(value)} Type: Object is not of expected type: "
                f"{_dtype_name(dtype)}"
            )
        _add_value(value, dtype, out)
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
            f"{shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _to_array(value, dtype: tf.DType) -> np.ndarray:
    shape = _dense_shape(value)
    flat: list = []
    _fill(value, 0, shape, dtype, flat)
    np_dtype = object if dtype == tf.string else dtype.as_numpy_dtype
    return np.array(flat, dtype=np_dtype).reshape(shape)


def request_tensors(
    doc: dict, input_infos: Callable[[str], Mapping]
) -> tuple[str, str, dict[str, np.ndarray]]:
    """(signature name, ROW|COLUMNAR, inputs) from a parsed predict request body."""
    sig_name = signature_name(doc)
    infos = input_infos(sig_name)
    if not infos:
        raise invalid_argument(f"Failed to get input map for signature: {sig_name or 'DEFAULT'}")
    dtypes = {name: tf.dtypes.as_dtype(info.dtype) for name, info in infos.items()}
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {_dump(doc)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(
                f"JSON Value: {_dump(doc)} Excepting 'instances' to be an list/array"
            )
        if not instances:
            raise invalid_argument(f"JSON Value: {_dump(doc)} No values in 'instances' array")
        return sig_name, ROW, _from_instances(instances, dtypes)
    if has_inputs:
        return sig_name, COLUMNAR, _from_inputs(doc["inputs"], dtypes)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _from_instances(instances: list, dtypes: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    first = instances[0]
    if not isinstance(first, dict) and len(dtypes) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )

    def is_object(v) -> bool:
        return isinstance(v, dict) and not _is_b64(v)

    objects = is_object(first)
    columns: dict[str, list[np.ndarray]] = {}

    def add(item, name: str, index: int, key: str | None):
        if name not in dtypes:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        try:
            arr = _to_array(item, dtypes[name])
        except ServingError as err:
            where = f" key: {key}" if key is not None else ""
            raise invalid_argument(
                f"Failed to process element: {index}{where} of 'instances' list. Error: "
                f"{_status_string(err)}"
            ) from err
        previous = columns.setdefault(name, [])
        if previous and previous[0].size != arr.size:
            raise invalid_argument(f"Expecting tensor size: {previous[0].size} but got: {arr.size}")
        if previous and previous[0].shape != arr.shape:
            raise invalid_argument(
                f"Expecting shape [{','.join(map(str, previous[0].shape))}] but got: "
                f"[{','.join(map(str, arr.shape))}]"
            )
        previous.append(arr)

    for index, elem in enumerate(instances):
        if objects:
            if not is_object(elem):
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for key, value in elem.items():
                add(value, key, index, key)
            if set(elem) != set(dtypes):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_dump(elem)} keys must be equal to: {','.join(sorted(dtypes))}"
                )
        else:
            if is_object(elem):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            add(elem, next(iter(dtypes)), index, None)
    return {name: np.stack(parts) for name, parts in columns.items()}


def _from_inputs(value, dtypes: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(dtypes) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name = next(iter(dtypes))
        return {name: _to_array(value, dtypes[name])}
    out = {}
    for name, dtype in dtypes.items():
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _to_array(value[name], dtype)
    return out


# -- responses ------------------------------------------------------------------------------


def _json_values(name: str, arr: np.ndarray):
    """Nested Python lists of JSON-ready scalars, floats in shortest round-trip form."""
    if arr.dtype.kind == "f":
        # float32 written as its shortest decimal (0.2, not 0.20000000298023224).
        flat = [float(s) for s in arr.ravel().astype(str)]
    elif arr.dtype.kind in "iub":
        flat = arr.ravel().tolist()
    elif arr.dtype.kind in "OSU":
        as_bytes = name.endswith("_bytes")
        flat = []
        for item in arr.ravel().tolist():
            raw = item if isinstance(item, bytes) else str(item).encode()
            flat.append(
                {"b64": base64.b64encode(raw).decode()}
                if as_bytes
                else raw.decode("utf-8", "replace")
            )
    else:
        raise invalid_argument(f"Failed to write JSON value for tensor type: {arr.dtype}")
    return _nest(flat, list(arr.shape))


def _nest(flat: list, shape: list[int]):
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def response_json(outputs: dict[str, np.ndarray], fmt: str) -> dict:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == COLUMNAR:
        if len(names) == 1:
            return {"outputs": _json_values(names[0], outputs[names[0]])}
        return {"outputs": {n: _json_values(n, outputs[n]) for n in names}}
    batch = None
    for n in names:
        if outputs[n].ndim == 0:
            raise invalid_argument(f"Tensor name: {n} has no shape information ")
        if batch is not None and outputs[n].shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {n} has inconsistent batch size: {outputs[n].shape[0]} expecting: "
                f"{batch}"
            )
        batch = outputs[n].shape[0]
    columns = {n: _json_values(n, outputs[n]) for n in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{n: columns[n][i] for n in names} for i in range(batch)]}


def dumps(obj) -> bytes:
    # allow_nan: TF Serving writes NaN / Infinity / -Infinity as bare tokens (WriteDecimal).
    return json.dumps(obj, allow_nan=True).encode()
