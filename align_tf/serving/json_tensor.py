"""TF Serving's JSON tensor format, both ways, for the client and the local server alike.

The specification is TF Serving's `tensorflow_serving/util/json_tensor.cc`: the row
("instances") and columnar ("inputs") request formats, `{"b64": ...}` for binary strings, the
"predictions" / "outputs" replies, which JSON value each dtype takes (`AddValueToTensor`: an
int32 input takes only JSON integers in range, a float input any number that fits a float
without loss), and how floats are written (`WriteDecimal`: six significant digits when they
read back as the same float, else all nine). Bodies are bounded (`RequestLimits`): nesting deeper
than `max_rank` dimensions is refused before numpy sees it.
"""

from __future__ import annotations

import base64
import json
import re

import grpc
import numpy as np

from align_tf.errors import RequestError, ServingError
from align_tf.serving.limits import RequestLimits


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


# -- values -> JSON text -----------------------------------------------------------------------
def _float_tokens(flat: np.ndarray) -> list[str]:
    """TF Serving's WriteDecimal for every value: "%g" when it reads back as the same value,
    else max_digits10 digits; ".0" after whole numbers; NaN / Infinity / -Infinity as such."""
    values = flat.tolist()
    tokens = ["%g" % v for v in values]
    finite = np.isfinite(flat)
    back = np.array([float(t) for t in tokens], dtype=flat.dtype)
    fmt = "%.9g" if flat.dtype.itemsize <= 4 else "%.17g"
    for i in np.flatnonzero((back != flat) & finite).tolist():
        tokens[i] = fmt % values[i]
    tokens = [t if ("." in t or "e" in t or "n" in t) else t + ".0" for t in tokens]  # "n": nan, inf
    for i in np.flatnonzero(~finite).tolist():
        tokens[i] = "NaN" if values[i] != values[i] else ("-Infinity" if values[i] < 0 else "Infinity")
    return tokens


def _string_token(value, as_bytes: bool) -> str:
    value = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if not as_bytes:  # text goes as a JSON string, bytes (and text that is not UTF-8) as b64
        try:
            return json.dumps(value.decode("utf-8"), ensure_ascii=False)
        except UnicodeDecodeError:
            pass
    return '{"b64": "' + base64.b64encode(value).decode("ascii") + '"}'


def _tokens(array: np.ndarray, alias: str) -> list[str]:
    flat = array.reshape(-1)
    if array.dtype == object or array.dtype.kind in "SU":
        as_bytes = alias.endswith("_bytes")
        return [_string_token(v, as_bytes) for v in flat]
    if array.dtype.kind == "f":
        return _float_tokens(flat)
    if array.dtype.kind == "b":
        return ["true" if v else "false" for v in flat.tolist()]
    return [str(v) for v in flat.tolist()]


def _nest(tokens: list, shape: tuple) -> str:
    if not shape:
        return tokens[0]
    if len(shape) == 1:
        return "[" + ",".join(tokens) + "]"
    step = len(tokens) // shape[0] if shape[0] else 0
    return "[" + ",".join(_nest(tokens[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])) + "]"


def tensor_json(array: np.ndarray, alias: str) -> str:
    """An array as JSON text: nested lists; strings as JSON strings, except for aliases ending in
    `_bytes` (TF Serving's rule) and values that are not UTF-8, which go as `{"b64": ...}`."""
    array = np.asarray(array)
    return _nest(_tokens(array, alias), array.shape)


def _object(items) -> str:
    return "{" + ", ".join(json.dumps(key) + ": " + text for key, text in items) + "}"


def predict_request_json(signature_name: str, inputs: dict) -> str:
    """A columnar Predict request body, as the client sends it."""
    return _object([("signature_name", json.dumps(signature_name)),
                    ("inputs", _object((alias, tensor_json(a, alias)) for alias, a in inputs.items()))])


def outputs_to_json(outputs: dict, fmt: str) -> str:
    """A Predict reply as TF Serving writes it (MakeJsonFromTensors): columnar requests get
    "outputs", row requests "predictions", one object per row when there are several outputs."""
    if fmt == "columnar":
        if len(outputs) == 1:
            (alias, array), = outputs.items()
            return _object([("outputs", tensor_json(array, alias))])
        return _object([("outputs", _object((alias, tensor_json(a, alias)) for alias, a in outputs.items()))])
    if len(outputs) == 1:
        (alias, array), = outputs.items()
        return _object([("predictions", tensor_json(array, alias))])
    batch = None
    for alias, array in outputs.items():
        if array.ndim == 0 or array.shape[0] < 1:
            raise _invalid(f"Tensor name: {alias} has invalid batch size: "
                           f"{array.shape[0] if array.ndim else 'none (a scalar)'}")
        if batch is not None and array.shape[0] != batch:
            raise _invalid(f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} "
                           f"expecting: {batch}")
        batch = array.shape[0]
    rows = {alias: [tensor_json(row, alias) for row in array] for alias, array in outputs.items()}
    return _object([("predictions", "[" + ", ".join(
        _object((alias, rows[alias][i]) for alias in outputs) for i in range(batch)) + "]")])


# -- JSON text -> values -----------------------------------------------------------------------
# Numbers that overflow a double: rapidjson (TF Serving's parser) refuses them, Python would
# read them as inf. Only bodies with such a token take the slower checked parse.
_HUGE_NUMBER = re.compile(r"[eE][+]?0*[1-9]\d{2,}|\d{309}")


def _checked_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise RequestError(f"Number too big to be stored in double: {text[:40]}")
    return value


def parse_json_body(body: bytes) -> dict:
    """A request body as TF Serving's ParseJson takes it: an object; NaN / Infinity allowed;
    bytes that are not UTF-8 kept as they are inside strings (rapidjson does not validate)."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    text = body.decode("utf-8", "surrogateescape")
    parse_float = _checked_float if _HUGE_NUMBER.search(text) else None
    try:
        doc = json.loads(text, parse_float=parse_float)
    except RecursionError:
        raise _invalid("JSON Parse error: the document is nested too deeply") from None
    except ValueError as e:
        raise _invalid(f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {_show(doc)} Is not object")
    return doc


def _show(value) -> str:
    """A JSON value in an error message, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(value) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _type_error(value, dtype_name: str) -> ServingError:
    return _invalid(f"JSON Value: {_show(value)} Type: {_type_name(value)} is not of expected type: {dtype_name}")


_INT_RANGE = {name: (int(np.iinfo(name).min), int(np.iinfo(name).max))
              for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")}
# Largest integer a float type holds exactly (IsLosslessDecimal in json_tensor.cc).
_EXACT_INT = {"float16": 2 ** 11 - 1, "float32": 2 ** 24 - 1, "float64": 2 ** 53 - 1}


def _string_value(value, dtype_name: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise _invalid("JSON Parse error: The surrogate pair in string is invalid.") from None
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError):
            raise _invalid("Unable to base64 decode") from None
    raise _type_error(value, dtype_name)


def _number_value(value, dtype_name: str):
    """One JSON value for a numeric / bool input, with TF Serving's AddValueToTensor rules
    (integer inputs: JSON integers in the dtype's range; float inputs: numbers a float holds
    without loss, NaN and infinities included; bool: true / false)."""
    if dtype_name == "bool":
        if isinstance(value, bool):
            return value
        raise _type_error(value, dtype_name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(value, dtype_name)
    if dtype_name in _INT_RANGE:
        low, high = _INT_RANGE[dtype_name]
        if isinstance(value, float) or not low <= value <= high:
            raise _type_error(value, dtype_name)
        return value
    if isinstance(value, int):
        if abs(value) > _EXACT_INT[dtype_name]:
            raise _invalid(f"Cannot convert JSON value: {value} to {dtype_name} without loss of precision.")
        return value
    if np.isfinite(value) and not np.isfinite(np.array(value).astype(dtype_name)):
        raise _invalid(f"Cannot convert JSON value: {_show(value)} to {dtype_name} without loss of precision.")
    return value


def _dense_shape(value, alias: str, limits: RequestLimits) -> tuple:
    """The shape a JSON value declares through its first elements (GetDenseTensorShape)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > limits.max_rank:
            raise _invalid(f"{alias}: JSON lists nested more than {limits.max_rank} deep; a tensor "
                           f"has at most {limits.max_rank} dimensions here")
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _walk(value, shape: tuple, dtype_name: str, convert, out: list, level: int = 0) -> None:
    """FillTensorProto: every leaf at depth len(shape), every list of its level's size."""
    if not isinstance(value, list):
        if level != len(shape):
            raise _invalid(f"JSON Value: {_show(value)} found at incorrect level: {level + 1} in the "
                           f"JSON DOM. Expected at level: {len(shape)}")
        out.append(convert(value, dtype_name))
        return
    if level >= len(shape):
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise _invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                       f"expected size: {shape[level]}")
    for item in value:
        _walk(item, shape, dtype_name, convert, out, level + 1)


def _fast_numbers(value, shape: tuple, dtype_name: str):
    """numpy's view of a numeric JSON value when it surely passes `_number_value` element by
    element, else None (the caller then walks it for the exact error)."""
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError, TypeError):
        return None
    if array.shape != shape or array.dtype == object:
        return None
    kind = array.dtype.kind
    if dtype_name == "bool":
        return array if kind == "b" else None
    if kind not in "iuf" or array.size == 0:
        return array if array.size == 0 and kind in "iufb" else None
    if dtype_name in _INT_RANGE:
        low, high = _INT_RANGE[dtype_name]
        return array if kind in "iu" and array.min() >= low and array.max() <= high else None
    if kind in "iu":
        limit = _EXACT_INT[dtype_name]
        return array if max(abs(int(array.min())), abs(int(array.max()))) <= limit else None
    with np.errstate(over="ignore"):
        narrowed = array.astype(dtype_name)
    return array if np.array_equal(np.isfinite(narrowed), np.isfinite(array)) else None


def json_to_array(value, dtype, alias: str, limits: RequestLimits = RequestLimits(),
                  may_hold_bools: bool = True) -> np.ndarray:
    """A JSON value (nested lists) as the array a signature input of `dtype` takes, or
    INVALID_ARGUMENT naming the first value that does not fit. `may_hold_bools=False` (the body
    has no `true` / `false` token) lets numeric inputs take numpy's fast path: numpy alone
    cannot tell `true` from `1`."""
    dtype_name = dtype.name
    shape = _dense_shape(value, alias, limits)
    if dtype_name != "string":
        if dtype_name not in _INT_RANGE and dtype_name not in _EXACT_INT and dtype_name != "bool":
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"Conversion of JSON Value: {_show(value)} to type: {dtype_name}")
        fast = None if may_hold_bools and dtype_name != "bool" else _fast_numbers(value, shape, dtype_name)
        if fast is not None:
            return fast.astype(dtype.as_numpy_dtype)
    flat: list = []
    _walk(value, shape, dtype_name, _string_value if dtype_name == "string" else _number_value, flat)
    if dtype_name == "string":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.array(flat, dtype=dtype.as_numpy_dtype).reshape(shape)


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)


def parse_predict_body(body: dict, input_specs: dict, limits: RequestLimits = RequestLimits(),
                       may_hold_bools: bool = True) -> tuple[dict, str]:
    """TF Serving's request JSON (row "instances" or columnar "inputs") -> (arrays, format),
    following FillPredictRequestFromJson in json_tensor.cc."""
    if not isinstance(body, dict):
        raise _invalid(f"JSON Value: {_show(body)} Is not object")
    names = sorted(input_specs)
    if "instances" in body:
        if "inputs" in body:
            raise _invalid("JSON Value: request not formatted correctly expecting only one of "
                           "'inputs' or 'instances' keys to exist")
        instances = body["instances"]
        if not isinstance(instances, list):
            raise _invalid("JSON Value: Excepting 'instances' to be an list/array")
        if not instances:
            raise _invalid("JSON Value: No values in 'instances' array")
        named = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if not named and len(names) > 1:
            raise _invalid("instances is a plain list, but expecting list of objects as multiple "
                           "input tensors required as per tensorinfo_map")
        if named:
            columns = {name: [] for name in names}
            for i, instance in enumerate(instances):
                if not isinstance(instance, dict) or _is_b64(instance):
                    raise _invalid(f"Expecting object but got list at item {i} of input list")
                for key in instance:
                    if key not in input_specs:
                        raise _invalid(f"Failed to process element: {i} key: {key} of 'instances' list. "
                                       f"JSON object: does not have named input: {key}")
                if set(instance) != set(names):
                    raise _invalid(f"Failed to process element: {i} of 'instances' list. JSON object: "
                                   f"{_show(instance)} must only have keys: {','.join(names)}")
                for name in names:
                    columns[name].append(instance[name])
        else:
            for i, instance in enumerate(instances):
                if isinstance(instance, dict) and not _is_b64(instance):
                    raise _invalid(f"Expecting value/list but got object at item {i} of input list")
            columns = {names[0]: instances}
        fmt = "row"
    elif "inputs" in body:
        inputs = body["inputs"]
        if not isinstance(inputs, dict) or _is_b64(inputs):
            if len(names) > 1:
                raise _invalid("inputs is a plain value/list, but expecting an object as multiple "
                               "input tensors required as per tensorinfo_map")
            columns = {names[0]: inputs}
        else:  # keys the signature does not name are ignored, as FillTensorMapFromInputsMap does
            missing = [name for name in names if name not in inputs]
            if missing:
                raise _invalid(f"Missing named input: {missing[0]} in 'inputs' object.")
            columns = {name: inputs[name] for name in names}
        fmt = "columnar"
    else:
        raise _invalid("Missing 'inputs' or 'instances' key")
    arrays = {alias: json_to_array(value, input_specs[alias].dtype, alias, limits, may_hold_bools)
              for alias, value in columns.items()}
    return arrays, fmt


def reply_to_arrays(value, alias: str, limits: RequestLimits = RequestLimits()) -> np.ndarray:
    """One output of a Predict reply, as the client reads it: `_bytes` outputs from base64,
    floating-point outputs as float32 (every ALIGN output is float32)."""
    shape = _dense_shape(value, alias, limits)
    if alias.endswith("_bytes"):
        flat: list = []
        _walk(value, shape, "string", _string_value, flat)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    array = np.asarray(value)
    return array.astype(np.float32) if array.dtype.kind == "f" else array
