"""TF Serving's JSON tensor format (util/json_tensor.cc), both ways, for the client and the local
server alike: the row ("instances") and columnar ("inputs") request formats, `{"b64": ...}` for
binary strings, and the "predictions" / "outputs" replies."""

from __future__ import annotations

import base64
import json

import grpc
import numpy as np

from align_tf.errors import ServingError


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


# -- arrays -> JSON ----------------------------------------------------------------------------
def array_to_json(array: np.ndarray, alias: str):
    """An array as nested JSON lists. Strings go as JSON strings, except for aliases ending in
    `_bytes` and values that are not UTF-8, which go as `{"b64": ...}`."""
    if array.dtype != object and array.dtype.kind not in "SU":
        return array.tolist()

    def encode(value):
        value = value if isinstance(value, bytes) else str(value).encode("utf-8")
        if not alias.endswith("_bytes"):  # TF Serving takes text as JSON strings, bytes as b64
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode("ascii")}

    def nested(value):
        return [nested(v) for v in value] if isinstance(value, list) else encode(value)

    return nested(array.tolist())


def outputs_to_json(outputs: dict, fmt: str) -> dict:
    """A Predict reply as TF Serving writes it: columnar requests get "outputs", row requests
    get "predictions" (one object per row when there are several outputs)."""
    if fmt == "columnar":
        if len(outputs) == 1:
            (alias, array), = outputs.items()
            return {"outputs": array_to_json(array, alias)}
        return {"outputs": {alias: array_to_json(a, alias) for alias, a in outputs.items()}}
    if len(outputs) == 1:
        (alias, array), = outputs.items()
        return {"predictions": array_to_json(array, alias)}
    sizes = {alias: (a.shape[0] if a.ndim else None) for alias, a in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise _invalid(f"Tensors with inconsistent batch sizes {sizes} cannot be written as "
                       "rows; use the columnar 'inputs' format")
    columns = {alias: array_to_json(a, alias) for alias, a in outputs.items()}
    n = next(iter(sizes.values()))
    return {"predictions": [{alias: columns[alias][i] for alias in columns} for i in range(n)]}


# -- JSON -> arrays ----------------------------------------------------------------------------
def _decode_json_strings(value):
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise _invalid("Unable to base64 decode") from None
        raise _invalid(f"JSON object {json.dumps(value)[:80]} is not a string tensor value "
                       '(only {"b64": ...} objects are)')
    if isinstance(value, list):
        return [_decode_json_strings(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    raise _invalid(f"JSON Value: {json.dumps(value)[:80]} is not of expected type: string")


def json_to_array(value, dtype, alias: str) -> np.ndarray:
    """A JSON value (nested lists) to the array a signature input of `dtype` takes."""
    if dtype.name == "string":
        array = np.array(_decode_json_strings(value), dtype=object)
        if any(isinstance(v, list) for v in array.flat):
            raise _invalid(f"{alias}: ragged lists are not a tensor")
        return array
    try:
        array = np.asarray(value)
    except ValueError:
        raise _invalid(f"{alias}: ragged lists are not a tensor") from None
    if array.dtype == object or array.dtype.kind in "USb" and dtype.name != "bool":
        raise _invalid(f"{alias}: JSON values are not of expected type: {dtype.name}")
    if dtype.is_integer and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise _invalid(f"{alias}: JSON values are not of expected type: {dtype.name}")
    return array.astype(dtype.as_numpy_dtype)


def parse_predict_body(body: dict, input_specs: dict) -> tuple[dict, str]:
    """TF Serving's request JSON (row "instances" or columnar "inputs") -> (arrays, format)."""
    if not isinstance(body, dict):
        raise _invalid("JSON Value: request body is not an object")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise _invalid("Missing 'inputs' or 'instances' key" if not has_instances
                       else "Not both 'inputs' and 'instances' keys can be specified")
    names = sorted(input_specs)
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise _invalid("'instances' must be a list")
        if instances and all(isinstance(i, dict) and not set(i) == {"b64"} for i in instances):
            keys = set(instances[0])
            if any(set(i) != keys for i in instances):
                raise _invalid("Expecting object with the same keys in every instance")
            columns = {k: [i[k] for i in instances] for k in keys}
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise _invalid(f"instances must be objects naming the inputs {names}")
        fmt = "row"
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and not set(inputs) == {"b64"}:
            columns = inputs
        elif len(names) == 1:
            columns = {names[0]: inputs}
        else:
            raise _invalid(f"'inputs' must be an object naming the inputs {names}")
        fmt = "columnar"
    arrays = {}
    for alias, value in columns.items():
        spec = input_specs.get(alias)
        if spec is None:  # the signature check reports the set difference
            arrays[alias] = np.asarray([])
            continue
        arrays[alias] = json_to_array(value, spec.dtype, alias)
    return arrays, fmt


def reply_to_arrays(value, alias: str) -> np.ndarray:
    """One output of a Predict reply, as the client reads it: `_bytes` outputs from base64,
    floating-point outputs as float32 (every ALIGN output is float32)."""
    if alias.endswith("_bytes"):
        return np.array(_decode_json_strings(value), dtype=object)
    array = np.asarray(value)
    return array.astype(np.float32) if array.dtype.kind == "f" else array
