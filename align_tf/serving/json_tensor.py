"""TF Serving's JSON tensor format, both ways, for the client and the local server alike.

The specification is TF Serving 2.20's `tensorflow_serving/util/json_tensor.cc`:

- requests (`FillPredictRequestFromJson`): the row ("instances") and columnar ("inputs")
  formats, `{"b64": ...}` for binary strings, which JSON value each dtype takes
  (`AddValueToTensor`: a float input any number, converted as rapidjson's GetFloat converts it,
  so 1435774380 and 1e39 pass as the nearest float and inf; an int32 input JSON integers within
  int32, wrapped to int8 / int16 / uint8 as TensorFlow's FromProto casts them; ...), each
  instance checked against the first ("Expecting tensor size", "Expecting shape"), and the
  messages word for word, JSON values quoted as rapidjson writes them (rapidjson.py);
- replies (`MakeJsonFromTensors`): "predictions" / "outputs", one object per row when there are
  several outputs, floats by `WriteDecimal` (six significant digits when they read back as the
  same float, else all nine), strings as the model's bytes (JSON-escaped, not re-encoded) or
  `{"b64": ...}` for outputs named `*_bytes`, and 400 for a dtype JSON cannot carry
  ("Failed to write JSON value for tensor type: complex64").

Bodies are bounded by the REST server's body limit; a tensor's rank is bounded (`max_rank`)
because numpy stops at 64 dimensions (TensorFlow at 254), checked before numpy sees the value.

One module of some 480 lines, past the usual 450: it is json_tensor.cc's counterpart, both
directions, and its tests port json_tensor_test.cc against it case by case.
"""

from __future__ import annotations

import base64
import json

import grpc
import numpy as np

from align_tf.errors import ServingError
from align_tf.serving import rapidjson
from align_tf.serving.limits import RequestLimits


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _status_string(error: ServingError) -> str:
    """absl::Status::ToString: "INVALID_ARGUMENT: message"."""
    return f"{error.code.name}: {error.message}"


# DataTypeString: TensorFlow's names for dtypes in messages.
_TF_NAMES = {"float32": "float", "float64": "double", "float16": "half", "object": "string", "bytes": "string"}


def type_name(dtype) -> str:
    """TensorFlow's DataTypeString for a tf.DType, numpy dtype or name ("float", "double", "half")."""
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", str(dtype))
    return _TF_NAMES.get(name, name)


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


def _b64_token(value: bytes) -> str:
    return '{"b64": "' + base64.b64encode(value).decode("ascii") + '"}'


def _as_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


_INT_KINDS = ("int8", "int16", "int32", "int64", "uint8", "uint32", "uint64")


def _reply_tokens(flat: np.ndarray, alias: str) -> list[str]:
    """AddSingleValueAndAdvance for every value of one output: the model's string bytes as they
    are (JSON-escaped; bytes that are not UTF-8 pass through, as rapidjson's writer passes them),
    `{"b64": ...}` for `*_bytes` outputs; 400 for a dtype TF Serving does not write."""
    if flat.dtype == object or flat.dtype.kind == "S":
        if alias.endswith("_bytes"):
            return [_b64_token(_as_bytes(v)) for v in flat]
        return [rapidjson.quote(_as_bytes(v).decode("utf-8", "surrogateescape")) for v in flat]
    name = flat.dtype.name
    if flat.size == 0:
        return []
    if name in ("float32", "float64"):
        return _float_tokens(flat)
    if name == "bool":
        return ["true" if v else "false" for v in flat.tolist()]
    if name in _INT_KINDS:
        return [str(v) for v in flat.tolist()]
    raise _invalid(f"Failed to write JSON value for tensor type: {type_name(name)}")


def _nest(tokens: list, shape: tuple) -> str:
    if not shape:
        return tokens[0]
    if len(shape) == 1:
        return "[" + ",".join(tokens) + "]"
    step = len(tokens) // shape[0] if shape[0] else 0
    return "[" + ",".join(_nest(tokens[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])) + "]"


def _object(items) -> str:
    return "{" + ", ".join(json.dumps(key) + ": " + text for key, text in items) + "}"


def outputs_to_json(outputs: dict, fmt: str) -> str:
    """A Predict reply as TF Serving writes it (MakeJsonFromTensors): columnar requests get
    "outputs", row requests "predictions" (one object per row when there are several outputs).
    The text may hold bytes that are not UTF-8 as U+DC80..U+DCFF: encode it with
    "surrogateescape" to send the model's bytes."""
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    arrays = {alias: np.asarray(array) if not isinstance(array, np.ndarray) else array
              for alias, array in outputs.items()}
    if fmt == "columnar":
        texts = [(alias, _nest(_reply_tokens(a.reshape(-1), alias), a.shape)) for alias, a in arrays.items()]
        return _object([("outputs", texts[0][1] if len(texts) == 1 else _object(texts))])
    if fmt != "row":
        raise _invalid("Invalid request format")
    batch = -1
    for alias, array in arrays.items():  # MakeRowFormatJsonFromTensors
        if array.ndim == 0:
            raise _invalid(f"Tensor name: {alias} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise _invalid(f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} "
                           f"expecting: {batch}")
        batch = array.shape[0]
    rows = {}
    for alias, array in arrays.items():
        tokens, shape = _reply_tokens(array.reshape(-1), alias), array.shape[1:]
        step = len(tokens) // batch if batch else 0
        rows[alias] = [_nest(tokens[i * step:(i + 1) * step], shape) for i in range(batch)]
    if len(arrays) == 1:
        (alias, items), = rows.items()
        return _object([("predictions", "[" + ",".join(items) + "]")])
    return _object([("predictions", "[" + ", ".join(
        _object((alias, rows[alias][i]) for alias in arrays) for i in range(batch)) + "]")])


def status_to_json(error: ServingError | None) -> str:
    """MakeJsonFromStatus: nothing for OK, else {"error": <message>}."""
    if error is None:
        return ""
    return _object([("error", json.dumps(error.message))])


# -- client requests ----------------------------------------------------------------------------
def _request_tokens(array: np.ndarray, alias: str) -> list[str]:
    flat = array.reshape(-1)
    if array.dtype == object or array.dtype.kind in "SU":
        tokens = []
        for v in flat:
            value = _as_bytes(v)
            try:  # text as a JSON string; bytes (and text that is not UTF-8) as b64
                tokens.append(_b64_token(value) if alias.endswith("_bytes") else
                              json.dumps(value.decode("utf-8"), ensure_ascii=False))
            except UnicodeDecodeError:
                tokens.append(_b64_token(value))
        return tokens
    if array.dtype.kind == "f":
        return _float_tokens(flat.astype(np.float64) if array.dtype.itemsize < 4 else flat)
    if array.dtype.kind == "b":
        return ["true" if v else "false" for v in flat.tolist()]
    return [str(v) for v in flat.tolist()]


def tensor_json(array: np.ndarray, alias: str) -> str:
    """An array as request JSON: nested lists; strings as JSON strings, except for aliases
    ending in `_bytes` and values that are not UTF-8, which go as `{"b64": ...}`."""
    array = np.asarray(array) if not isinstance(array, np.ndarray) else array
    return _nest(_request_tokens(array, alias), array.shape)


def predict_request_json(signature_name: str, inputs: dict) -> str:
    """A columnar Predict request body, as the client sends it."""
    return _object([("signature_name", json.dumps(signature_name)),
                    ("inputs", _object((alias, tensor_json(a, alias)) for alias, a in inputs.items()))])


# -- JSON text -> values -----------------------------------------------------------------------
def parse_json_body(body: bytes) -> dict:
    """A request body as TF Serving's ParseJson takes it: rapidjson's reading (any depth, NaN /
    Infinity, bytes that are not UTF-8 kept inside strings, what follows the document ignored),
    its messages, and an object at the top."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = rapidjson.parse(body)
    except rapidjson.JsonParseError as e:
        raise _invalid(f"JSON Parse error: {e.message} at offset: {e.offset}") from None
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {rapidjson.debug_string(doc)} Is not object")
    return doc


def signature_name_of(doc: dict) -> str:
    """FillSignature: the optional "signature_name", which must be a string."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise _invalid(f"JSON Value: {rapidjson.debug_string(doc)} not formatted correctly. "
                       "'signature_name' key must be a string value.")
    return name


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _type_error(value, dtype_name: str) -> ServingError:
    return _invalid(f"JSON Value: {rapidjson.debug_string(value)} Type: {_json_type(value)} "
                    f"is not of expected type: {type_name(dtype_name)}")


# What each integer dtype takes (IsInt: int32 range, then wrapped by FromProto; IsInt64, IsUint,
# IsUint64), and the dtypes AddValueToTensor converts at all.
_INT_TAKES = {"int8": (-2 ** 31, 2 ** 31 - 1), "int16": (-2 ** 31, 2 ** 31 - 1), "int32": (-2 ** 31, 2 ** 31 - 1),
              "uint8": (-2 ** 31, 2 ** 31 - 1), "int64": (-2 ** 63, 2 ** 63 - 1),
              "uint32": (0, 2 ** 32 - 1), "uint64": (0, 2 ** 64 - 1)}
_CONVERTED = set(_INT_TAKES) | {"float32", "float64", "bool", "string"}


def _is_b64(value) -> bool:
    """IsValBase64Object: an object with the one key "b64" holding a string."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _b64_value(value) -> bytes:
    """JsonDecodeBase64Object (absl::Base64Unescape takes padded or unpadded base64)."""
    if not _is_b64(value):
        raise _invalid(f"JSON Value: {rapidjson.debug_string(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (ValueError, TypeError):
        raise _invalid("Unable to base64 decode") from None


def _leaf(value, dtype_name: str):
    """AddValueToTensor (and FillTensorProto's object case) for one JSON value."""
    if isinstance(value, dict):
        if dtype_name == "string":
            return _b64_value(value)
        raise _type_error(value, dtype_name)
    if dtype_name == "string":
        if isinstance(value, str):
            return value.encode("utf-8", "surrogateescape")
        raise _type_error(value, dtype_name)
    if dtype_name == "bool":
        if isinstance(value, bool):
            return value
        raise _type_error(value, dtype_name)
    if dtype_name not in _CONVERTED:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Conversion of JSON Value: "
                           f"{rapidjson.debug_string(value)} to type: {type_name(dtype_name)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(value, dtype_name)
    if dtype_name in _INT_TAKES:
        low, high = _INT_TAKES[dtype_name]
        if isinstance(value, float) or not low <= value <= high:
            raise _type_error(value, dtype_name)
    return value


def dense_shape(value, alias: str, limits: RequestLimits = RequestLimits()) -> tuple:
    """GetDenseTensorShape: the shape a JSON value declares through its first elements, up to
    `limits.max_rank` dimensions (beyond: this server's bound, checked before numpy sees it)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > limits.max_rank:
            raise _invalid(f"tensor parsing error: {alias} (JSON lists nested more than {limits.max_rank} "
                           f"deep; a tensor has at most {limits.max_rank} dimensions here)")
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _walk(value, shape: tuple, dtype_name: str, out: list, level: int = 0) -> None:
    """FillTensorProto: every leaf at depth len(shape), every list of its level's size."""
    if not isinstance(value, list):
        if level != len(shape):
            raise _invalid(f"JSON Value: {rapidjson.debug_string(value)} found at incorrect level: {level + 1} "
                           f"in the JSON DOM. Expected at level: {len(shape)}")
        out.append(_leaf(value, dtype_name))
        return
    if level >= len(shape):
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise _invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                       f"expected size: {shape[level]}")
    for item in value:
        _walk(item, shape, dtype_name, out, level + 1)


def _fast_numbers(value, shape: tuple, dtype_name: str):
    """numpy's view of a numeric JSON value when it surely passes `_leaf` value by value, else
    None (the caller then walks it for the exact error)."""
    if dtype_name not in _CONVERTED or dtype_name == "string":
        return None
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError, TypeError):
        return None
    if array.shape != shape or array.dtype == object:
        return None
    kind = array.dtype.kind
    if array.size == 0:
        return array if kind in "iufb" else None
    if dtype_name == "bool":
        return array if kind == "b" else None
    if dtype_name in _INT_TAKES:
        low, high = _INT_TAKES[dtype_name]
        return array if kind in "iu" and int(array.min()) >= low and int(array.max()) <= high else None
    return array if kind in "iuf" else None


def _to_dtype(values, dtype) -> np.ndarray:
    """The values as the input's dtype: floats as the nearest float (inf past the range, as
    rapidjson's GetFloat), integers wrapped to the narrow integer dtypes (TensorFlow's cast)."""
    target = np.dtype(dtype.as_numpy_dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        if target.kind in "iu":
            return np.asarray(values, dtype=np.int64 if target.kind == "i" or target.itemsize < 8
                              else np.uint64).astype(target)
        return np.asarray(values, dtype=np.float64 if target.kind == "f" else None).astype(target)


def json_to_array(value, dtype, alias: str, limits: RequestLimits = RequestLimits(),
                  may_hold_bools: bool = True) -> np.ndarray:
    """A JSON value (nested lists) as the array a signature input of `dtype` takes, or the error
    TF Serving gives for the first value that does not fit. `may_hold_bools=False` (the body has
    no `true` / `false` token) lets numeric inputs take numpy's fast path: numpy alone cannot
    tell `true` from `1`."""
    dtype_name = dtype.name
    shape = dense_shape(value, alias, limits)
    if dtype_name != "string":
        fast = None if may_hold_bools and dtype_name != "bool" else _fast_numbers(value, shape, dtype_name)
        if fast is not None:
            return _to_dtype(fast, dtype)
    flat: list = []
    _walk(value, shape, dtype_name, flat)
    if dtype_name == "string":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if dtype_name not in _CONVERTED:  # no leaf to convert: an empty tensor of that dtype
        return np.zeros(shape, dtype=dtype.as_numpy_dtype)
    return _to_dtype(flat, dtype).reshape(shape)


def _shape_text(shape: tuple) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _instances(instances: list, specs: dict, names: list, limits: RequestLimits, may_hold_bools: bool) -> dict:
    """FillTensorMapFromInstancesList: every instance converted and checked against the first
    (its size, then its shape), errors naming the instance; then batched."""
    objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    # Fast road: every instance has the same structure; the whole column converts at once.
    if objects and all(isinstance(e, dict) and e.keys() == specs.keys() for e in instances):
        try:
            return {name: json_to_array([e[name] for e in instances], specs[name].dtype, name, limits,
                                        may_hold_bools) for name in names}
        except ServingError:
            pass
    elif not objects and not any(isinstance(e, dict) and not _is_b64(e) for e in instances):
        try:
            return {names[0]: json_to_array(instances, specs[names[0]].dtype, names[0], limits, may_hold_bools)}
        except ServingError:
            pass
    # The exact road: instance by instance, as TF Serving reports the first problem.
    sizes: dict = {}
    shapes: dict = {}
    columns: dict = {name: [] for name in names}

    def add(item, name: str) -> None:  # AddInstanceItem
        if name not in specs:
            raise _invalid(f"JSON object: does not have named input: {name}")
        array = json_to_array(item, specs[name].dtype, name, limits, may_hold_bools)
        if name not in sizes:
            sizes[name], shapes[name] = array.size, array.shape
        elif sizes[name] != array.size:
            raise _invalid(f"Expecting tensor size: {sizes[name]} but got: {array.size}")
        elif shapes[name] != array.shape:
            raise _invalid(f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(array.shape)}")
        columns[name].append(array)

    for i, element in enumerate(instances):
        if objects:
            if not (isinstance(element, dict) and not _is_b64(element)):
                raise _invalid(f"Expecting object but got list at item {i} of input list")
            for key, item in element.items():
                try:
                    add(item, key)
                except ServingError as e:
                    raise _invalid(f"Failed to process element: {i} key: {key} of 'instances' list. "
                                   f"Error: {_status_string(e)}") from None
            if set(element) != set(names):
                raise _invalid(f"Failed to process element: {i} of 'instances' list. JSON object: "
                               f"{rapidjson.debug_string(element)} keys must be equal to: {','.join(names)}")
        else:
            if isinstance(element, dict) and not _is_b64(element):
                raise _invalid(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(element, names[0])
            except ServingError as e:
                raise _invalid(f"Failed to process element: {i} of 'instances' list. "
                               f"Error: {_status_string(e)}") from None
    return {name: np.stack(columns[name]) for name in names}


def parse_predict_body(body: dict, input_specs: dict, limits: RequestLimits = RequestLimits(),
                       may_hold_bools: bool = True, signature_name: str = "") -> tuple[dict, str]:
    """TF Serving's request JSON (row "instances" or columnar "inputs") -> (arrays, format),
    following FillPredictRequestFromJson in json_tensor.cc. `input_specs`: the signature's
    inputs (alias -> anything with a `.dtype`)."""
    if not isinstance(body, dict):
        raise _invalid(f"JSON Value: {rapidjson.debug_string(body)} Is not object")
    if not input_specs:
        raise _invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    names = sorted(input_specs)
    if "instances" in body:
        if "inputs" in body:
            raise _invalid(f"JSON Value: {rapidjson.debug_string(body)} Not formatted correctly expecting "
                           "only one of 'inputs' or 'instances' keys to exist ")
        instances = body["instances"]
        if not isinstance(instances, list):
            raise _invalid(f"JSON Value: {rapidjson.debug_string(body)} Expecting 'instances' to be an list/array")
        if not instances:
            raise _invalid(f"JSON Value: {rapidjson.debug_string(body)} No values in 'instances' array")
        if not isinstance(instances[0], dict) and len(names) > 1:
            raise _invalid("instances is a plain list, but expecting list of objects as multiple "
                           "input tensors required as per tensorinfo_map")
        return _instances(instances, input_specs, names, limits, may_hold_bools), "row"
    if "inputs" in body:
        inputs = body["inputs"]
        if not isinstance(inputs, dict) or _is_b64(inputs):
            if len(names) > 1:
                raise _invalid("inputs is a plain value/list, but expecting an object as multiple "
                               "input tensors required as per tensorinfo_map")
            columns = {names[0]: inputs}
        else:  # keys the signature does not name are ignored, as FillTensorMapFromInputsMap does
            columns = {}
            for name in names:
                if name not in inputs:
                    raise _invalid(f"Missing named input: {name} in 'inputs' object.")
                columns[name] = inputs[name]
        return {alias: json_to_array(value, input_specs[alias].dtype, alias, limits, may_hold_bools)
                for alias, value in columns.items()}, "columnar"
    raise _invalid("Missing 'inputs' or 'instances' key")


def reply_to_arrays(value, alias: str, limits: RequestLimits = RequestLimits()) -> np.ndarray:
    """One output of a Predict reply, as the client reads it: `_bytes` outputs from base64,
    floating-point outputs as float32 (every ALIGN output is float32)."""
    shape = dense_shape(value, alias, limits)
    if alias.endswith("_bytes"):
        flat: list = []
        _walk(value, shape, "string", flat)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    array = np.asarray(value)
    return array.astype(np.float32) if array.dtype.kind == "f" else array
