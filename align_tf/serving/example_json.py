"""TF Serving's JSON for Classify and Regress, both ways: `tf.Example`s from a `:classify` /
`:regress` body, and the `{"results": ...}` replies.

The specification is TF Serving's `tensorflow_serving/util/json_tensor.cc`:
`FillClassifyRegressRequestFromJson` (an optional `"context"` object and a non-empty
`"examples"` list, each an object of features), `MakeExampleFromJsonObject` and
`AddValueToFeature` (which JSON value makes which feature list: strings and `{"b64": ...}` go to
`bytes_list`, numbers written with a decimal point or an exponent to `float_list`, integers and
`true` / `false` to `int64_list`; one feature holds one kind), and
`MakeJsonFromClassificationResult` / `MakeJsonFromRegressionResult` (`[[label, score], ...]`
per example; one value per example; scores written by `WriteDecimal`).
"""

from __future__ import annotations

import json

import grpc
import numpy as np

from align_tf.errors import ServingError
from align_tf.serving import rapidjson
from align_tf.serving.json_tensor import _b64_value, _float_tokens, _is_b64, signature_name_of

CONTEXT_KEY = "context"
EXAMPLES_KEY = "examples"
RESULTS_KEY = "results"
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2 ** 63), 2 ** 63 - 1, 2 ** 64 - 1


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _json_type(value) -> str:
    """JsonTypeString: rapidjson's name for a value's type."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _add(feature, kind: str, name: str):
    """The feature's `kind` list, or IncompatibleFeatureKindError when it already holds another."""
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        raise _invalid(f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[current]}")
    return getattr(feature, kind).value


def _add_value(value, name: str, feature) -> None:
    """AddValueToFeature: one JSON value into a Feature, typed as rapidjson reads it."""
    if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
        raise _invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")
    if isinstance(value, bool):
        _add(feature, "int64_list", name).append(1 if value else 0)
    elif isinstance(value, str):  # its bytes as they came (not UTF-8 included: surrogate-escaped)
        _add(feature, "bytes_list", name).append(value.encode("utf-8", "surrogateescape"))
    elif isinstance(value, dict):
        _add(feature, "bytes_list", name).append(_b64_value(value))
    elif isinstance(value, int) and _INT64_MIN <= value <= _UINT64_MAX:
        values = _add(feature, "int64_list", name)
        if value > _INT64_MAX:
            raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        values.append(value)
    else:  # a double; integers past 64 bits are doubles to rapidjson too
        try:
            number = float(value)
        except OverflowError:
            raise _invalid("JSON Parse error: Number too big to be stored in double") from None
        with np.errstate(over="ignore"):
            _add(feature, "float_list", name).append(float(np.float32(number)))  # GetFloat


def example_from_json(value, example) -> None:
    """MakeExampleFromJsonObject: a JSON object of features into `example` (an Example proto)."""
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    features = example.features.feature
    for name, content in value.items():
        try:
            feature = features[name]
        except (UnicodeEncodeError, ValueError):  # bytes that are not UTF-8 in the JSON key
            raise _invalid(f"Feature name {rapidjson.debug_string(name)} is not UTF-8 text; a tf.Example feature "
                           "name is a proto3 string") from None
        feature.Clear()  # a repeated key: the last one wins, as the C++ map assignment does
        for item in (content if isinstance(content, list) else [content]):
            _add_value(item, name, feature)


def request_from_json(doc: dict):
    """FillClassifyRegressRequestFromJson: (signature name, `tensorflow.serving.Input`) of a
    `:classify` / `:regress` body; the Input has `example_list_with_context` when the body has a
    "context", else `example_list`."""
    from tensorflow_serving.apis import input_pb2

    signature_name = signature_name_of(doc)  # FillSignature
    request_input = input_pb2.Input()
    has_context = CONTEXT_KEY in doc
    if has_context:
        example_from_json(doc[CONTEXT_KEY], request_input.example_list_with_context.context)
    if EXAMPLES_KEY not in doc:  # TF Serving names "classify" for :regress too
        raise _invalid(f"JSON Value: {rapidjson.debug_string(doc)} When method is classify, key '{EXAMPLES_KEY}' "
                       "is expected and was not found")
    examples = doc[EXAMPLES_KEY]
    if not isinstance(examples, list):
        raise _invalid(f"JSON Value: {rapidjson.debug_string(doc)} Expecting '{EXAMPLES_KEY}' value to be an list/array")
    if not examples:
        raise _invalid(f"JSON Value: {rapidjson.debug_string(doc)} '{EXAMPLES_KEY}' value is an empty array")
    target = request_input.example_list_with_context.examples if has_context \
        else request_input.example_list.examples
    for value in examples:
        example_from_json(value, target.add())
    return signature_name, request_input


# -- replies ----------------------------------------------------------------------------------
def _label_token(label: bytes) -> str:
    # rapidjson writes the label's bytes as they are: text that is not UTF-8 goes through as
    # lone surrogates here and back to the same bytes when the reply is encoded.
    return json.dumps(label.decode("utf-8", "surrogateescape"), ensure_ascii=False)


def classification_json(labels, scores) -> bytes:
    """MakeJsonFromClassificationResult from the result's columns: `labels` (bytes [N, C] or
    None) and `scores` (float32 [N, C] or None); "" for a missing label, 0 for a missing score,
    as the proto's defaults read."""
    shape = (labels if labels is not None else scores).shape
    if shape[0] == 0:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    score_tokens = _float_tokens(np.asarray(scores, np.float32).reshape(-1)) if scores is not None \
        else ["0.0"] * (shape[0] * shape[1])
    if labels is not None:
        written: dict = {}  # a label column repeats per example: write each label once
        label_tokens = [written.get(v) or written.setdefault(v, _label_token(v)) for v in labels.reshape(-1)]
    else:
        label_tokens = ['""'] * (shape[0] * shape[1])
    pairs = [f"[{label}, {score}]" for label, score in zip(label_tokens, score_tokens)]
    width = shape[1]
    rows = ["[" + ", ".join(pairs[i * width:(i + 1) * width]) + "]" for i in range(shape[0])]
    return ('{"' + RESULTS_KEY + '": [' + ", ".join(rows) + "]}").encode("utf-8", "surrogateescape")


def regression_json(values) -> bytes:
    """MakeJsonFromRegressionResult: one number per example."""
    values = np.asarray(values, np.float32).reshape(-1)
    if values.size == 0:
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    return ('{"' + RESULTS_KEY + '": [' + ", ".join(_float_tokens(values)) + "]}").encode("utf-8")
