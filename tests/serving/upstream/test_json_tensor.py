"""tensorflow/serving 2.20 tensorflow_serving/util/json_tensor_test.cc, ported: every test case,
one test each (snake_case of the upstream name), against this server's JSON codec
(align_tf/serving/json_tensor.py, whose REST handler calls exactly these functions):

- FillPredictRequestFromJson(json, infomap) -> parse_json_body + signature_name_of +
  parse_predict_body (arrays compared with what tf.make_ndarray reads from upstream's expected
  TensorProto: dtype, shape and values);
- MakeJsonFromTensors(tensormap, format) -> outputs_to_json (tensors from upstream's TensorProto
  text; replies compared as JSON documents, CompareJson; CompareJsonAllValuesAsStrings compares
  number tokens as text);
- MakeJsonFromStatus -> status_to_json;
- FillClassificationRequestFromJson / FillRegressionRequestFromJson -> parse_json_body +
  align_tf/serving/example_json.py request_from_json (the request's Input, and the signature
  name when the body has one); MakeJsonFromClassificationResult / MakeJsonFromRegressionResult ->
  classification_json / regression_json, given the result's columns (the REST handler writes
  from them).
"""

from __future__ import annotations

import json
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from align_tf.errors import ServingError
from align_tf.serving.json_tensor import (outputs_to_json, parse_json_body, parse_predict_body,
                                          signature_name_of, status_to_json)

UPSTREAM = "util/json_tensor_test.cc"
DTYPES = {"DT_INT32": tf.int32, "DT_FLOAT": tf.float32, "DT_DOUBLE": tf.float64, "DT_STRING": tf.string}


def upstream(case):
    return pytest.mark.upstream(UPSTREAM, case)


def infomap(**dtypes) -> dict:
    """A TensorInfoMap: alias -> `dtype: DT_...`."""
    return {alias: tf.TensorSpec(None, DTYPES[dtype]) for alias, dtype in dtypes.items()}


def fill(json_text: str | bytes, specs: dict):
    """FillPredictRequestFromJson: (signature_name, arrays, format)."""
    body = json_text.encode() if isinstance(json_text, str) else json_text
    doc = parse_json_body(body)
    signature_name = signature_name_of(doc)
    arrays, fmt = parse_predict_body(doc, specs, signature_name=signature_name)
    return signature_name, arrays, fmt


def fill_error(json_text: str, specs: dict) -> ServingError:
    with pytest.raises(ServingError) as info:
        fill(json_text, specs)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, info.value
    return info.value


def tensor_proto(text: str):
    from tensorflow.core.framework import tensor_pb2

    return text_format.Parse(text, tensor_pb2.TensorProto())


def equals_proto(array: np.ndarray, expected_text: str) -> None:
    """EqualsProto of the request tensor: dtype, shape and values (NaN equal to NaN)."""
    expected = tf.make_ndarray(tensor_proto(expected_text))
    assert array.shape == expected.shape, (array.shape, expected.shape)
    if expected.dtype == object:
        assert array.dtype == object and array.tolist() == expected.tolist()
    else:
        assert array.dtype == expected.dtype, (array.dtype, expected.dtype)
        np.testing.assert_array_equal(array, expected)
        assert np.array_equal(np.signbit(array), np.signbit(expected)) if array.dtype.kind == "f" else True


def make_json(tensors: dict, fmt: str) -> str:
    """MakeJsonFromTensors over TensorProto texts."""
    return outputs_to_json({name: tf.make_ndarray(tensor_proto(text)) for name, text in tensors.items()}, fmt)


def compare_json(ours: str, expected: str) -> None:
    assert json.loads(ours) == json.loads(expected), ours


def compare_json_all_values_as_strings(ours: str, expected: str) -> None:
    def load(text):
        return json.loads(text, parse_float=str, parse_int=str, parse_constant=str)
    assert load(ours) == load(expected), ours


@upstream("JsontensorTest.SingleUnnamedTensor")
def test_single_unnamed_tensor():
    _, tmap, fmt = fill('{"instances": [[1,2],[3,4],[5,6]]}', infomap(default="DT_INT32"))
    assert len(tmap) == 1 and fmt == "row"
    equals_proto(tmap["default"], "dtype: DT_INT32 tensor_shape { dim { size: 3 } dim { size: 2 } } "
                                  "int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5 int_val: 6")


@upstream("JsontensorTest.DeeplyNestedWellFormed")
def test_deeply_nested_well_formed():
    body = b'{"instances":[1], "nested":' + b"[" * 500000 + b"]" * 500000 + b"}"
    _, tmap, _ = fill(body, infomap(default="DT_INT32"))
    assert len(tmap) == 1


@upstream("JsontensorTest.DeeplyNestedMalformed")
def test_deeply_nested_malformed():
    body = b'{"signature_name":' + b"[" * 500000 + b"]" * 500000 + b"}"
    with pytest.raises(ServingError) as info:
        fill(body, infomap(default="DT_INT32"))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "key must be a string value" in info.value.message


@upstream("JsontensorTest.MixedInputForFloatTensor")
def test_mixed_input_for_float_tensor():
    _, tmap, fmt = fill('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', infomap(default="DT_FLOAT"))
    assert len(tmap) == 1 and fmt == "row"
    equals_proto(tmap["default"], "dtype: DT_FLOAT tensor_shape { dim { size: 7 } } float_val: 1 float_val: 2.0 "
                                  "float_val: 3 float_val: 4 float_val: 5.003 float_val: 0.007 float_val: 0.0")


@upstream("JsontensorTest.MixedInputForDoubleTensor")
def test_mixed_input_for_double_tensor():
    _, tmap, fmt = fill('{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}', infomap(default="DT_DOUBLE"))
    assert len(tmap) == 1 and fmt == "row"
    equals_proto(tmap["default"], "dtype: DT_DOUBLE tensor_shape { dim { size: 7 } } double_val: 1.0 "
                                  "double_val: 2 double_val: 3 double_val: 4 double_val: 0.662 double_val: 0 "
                                  "double_val: 0.0")


@upstream("JsontensorTest.FloatTensorWithPrecisionLoss")
def test_float_tensor_with_precision_loss():
    for text in ('{"instances": [1435774380]}', '{"instances": [1435774380.0]}'):
        _, tmap, fmt = fill(text, infomap(default="DT_FLOAT"))
        assert len(tmap) == 1 and fmt == "row"
        equals_proto(tmap["default"], "dtype: DT_FLOAT tensor_shape { dim { size: 1 } } float_val: 1435774380")


@upstream("JsontensorTest.FloatTensorThatExceedsMaxReturnsInf")
def test_float_tensor_that_exceeds_max_returns_inf():
    for value, expected in ((sys.float_info.max, "inf"), (-sys.float_info.max, "-inf")):
        _, tmap, fmt = fill('{ "instances": [%r] }' % value, infomap(default="DT_FLOAT"))
        assert len(tmap) == 1 and fmt == "row"
        equals_proto(tmap["default"], f"dtype: DT_FLOAT tensor_shape {{ dim {{ size: 1 }} }} float_val: {expected}")


@upstream("JsontensorTest.FloatTensorThatExceedsMinReturnsZero")
def test_float_tensor_that_exceeds_min_returns_zero():
    for value, expected in ((sys.float_info.min, "0"), (-sys.float_info.min, "-0")):
        _, tmap, fmt = fill('{ "instances": [%r] }' % value, infomap(default="DT_FLOAT"))
        assert len(tmap) == 1 and fmt == "row"
        equals_proto(tmap["default"], f"dtype: DT_FLOAT tensor_shape {{ dim {{ size: 1 }} }} float_val: {expected}")


@upstream("JsontensorTest.SingleUnnamedTensorWithSignature")
def test_single_unnamed_tensor_with_signature():
    signature, tmap, fmt = fill('{"signature_name": "predict_images", "instances": [[1,2]]}',
                                infomap(default="DT_INT32"))
    assert signature == "predict_images" and len(tmap) == 1 and fmt == "row"
    equals_proto(tmap["default"], "dtype: DT_INT32 tensor_shape { dim { size: 1 } dim { size: 2 } } "
                                  "int_val: 1 int_val: 2")


@upstream("JsontensorTest.TensorFromNonNullTerminatedBuffer")
def test_tensor_from_non_null_terminated_buffer():
    buffer = b'{"instances": [[1,2],[3,4],[5,6]]}X'
    _, tmap, fmt = fill(memoryview(buffer)[:-1].tobytes(), infomap(default="DT_INT32"))
    assert len(tmap) == 1 and fmt == "row"
    equals_proto(tmap["default"], "dtype: DT_INT32 tensor_shape { dim { size: 3 } dim { size: 2 } } "
                                  "int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5 int_val: 6")


@upstream("JsontensorTest.SingleUnnamedTensorBase64Scalars")
def test_single_unnamed_tensor_base64_scalars():
    _, tmap, fmt = fill('{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}',
                        infomap(default="DT_STRING"))
    assert len(tmap) == 1 and fmt == "row"
    equals_proto(tmap["default"], 'dtype: DT_STRING tensor_shape { dim { size: 2 } } '
                                  'string_val: "hello" string_val: "world"')


@upstream("JsontensorTest.SingleUnnamedTensorBase64Lists")
def test_single_unnamed_tensor_base64_lists():
    _, tmap, fmt = fill('{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}',
                        infomap(default="DT_STRING"))
    assert len(tmap) == 1 and fmt == "row"
    equals_proto(tmap["default"], 'dtype: DT_STRING tensor_shape { dim { size: 2 } dim { size: 1 } } '
                                  'string_val: "hello" string_val: "world"')


@upstream("JsontensorTest.SingleNamedTensorBase64")
def test_single_named_tensor_base64():
    _, tmap, fmt = fill('{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}',
                        infomap(default="DT_STRING"))
    assert len(tmap) == 1 and fmt == "row"
    equals_proto(tmap["default"], 'dtype: DT_STRING tensor_shape { dim { size: 1 } dim { size: 2 } '
                                  'dim { size: 1 } } string_val: "hello" string_val: "world"')


@upstream("JsontensorTest.MultipleNamedTensor")
def test_multiple_named_tensor():
    _, tmap, fmt = fill("""{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"], "float_tensor": [1.0, NaN],
         "dbl_tensor": [NaN]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"], "float_tensor": [2.0, Infinity],
         "dbl_tensor": [2.0]}]}""",
                        infomap(int_tensor="DT_INT32", str_tensor="DT_STRING", float_tensor="DT_FLOAT",
                                dbl_tensor="DT_DOUBLE"))
    assert len(tmap) == 4 and fmt == "row"
    equals_proto(tmap["int_tensor"], "dtype: DT_INT32 tensor_shape { dim { size: 2 } dim { size: 3 } dim { size: 2 } } "
                                     + " ".join(f"int_val: {v}" for v in (1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2)))
    equals_proto(tmap["str_tensor"], 'dtype: DT_STRING tensor_shape { dim { size: 2 } dim { size: 2 } } '
                                     'string_val: "foo" string_val: "bar" string_val: "baz" string_val: "bat"')
    equals_proto(tmap["float_tensor"], "dtype: DT_FLOAT tensor_shape { dim { size: 2 } dim { size: 2 } } "
                                       "float_val: 1.0 float_val: NaN float_val: 2.0 float_val: Infinity")
    equals_proto(tmap["dbl_tensor"], "dtype: DT_DOUBLE tensor_shape { dim { size: 2 } dim { size: 1 } } "
                                     "double_val: NaN double_val: 2.0")


@upstream("JsontensorTest.SingleUnnamedTensorColumnarFormat")
def test_single_unnamed_tensor_columnar_format():
    expected = ("dtype: DT_INT32 tensor_shape { dim { size: 1 } dim { size: 3 } dim { size: 2 } } "
                "int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5 int_val: 6")
    for text in ('{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}', '{"inputs": [[[1,2],[3,4],[5,6]]]}'):
        _, tmap, fmt = fill(text, infomap(int_tensor="DT_INT32"))
        assert len(tmap) == 1 and fmt == "columnar"
        equals_proto(tmap["int_tensor"], expected)


@upstream("JsontensorTest.MultipleNamedTensorColumnarFormat")
def test_multiple_named_tensor_columnar_format():
    _, tmap, fmt = fill("""{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"],
                                       "bin_tensor": { "b64" : "aGVsbG8=" }}}""",
                        infomap(int_tensor="DT_INT32", str_tensor="DT_STRING", bin_tensor="DT_STRING"))
    assert len(tmap) == 3 and fmt == "columnar"
    equals_proto(tmap["int_tensor"], "dtype: DT_INT32 tensor_shape { dim { size: 1 } dim { size: 3 } dim { size: 2 } } "
                                     "int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5 int_val: 6")
    equals_proto(tmap["str_tensor"], 'dtype: DT_STRING tensor_shape { dim { size: 2 } } '
                                     'string_val: "foo" string_val: "bar"')
    equals_proto(tmap["bin_tensor"], 'dtype: DT_STRING tensor_shape {} string_val: "hello"')


@upstream("JsontensorTest.SingleUnnamedTensorErrors")
def test_single_unnamed_tensor_errors():
    specs = infomap(default="DT_INT32")
    assert "document is empty" in fill_error("", specs).message
    assert "must be a string value" in fill_error(
        '{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', specs).message
    assert "Not formatted correctly" in fill_error(
        '{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}', specs).message
    assert "Expecting tensor size" in fill_error('{"instances": [[1,2],[3,4],[5,6,7]]}', specs).message
    assert "Expecting shape" in fill_error('{"instances": [[1,2],[3,4],[[5,6]]]}', specs).message
    assert "Expecting shape" in fill_error('{"instances": [1, [1]]}', specs).message
    assert "not of expected type" in fill_error('{"instances": [[1,2],["a", "b"]]}', specs).message


@upstream("JsontensorTest.MultipleNamedTensorErrors")
def test_multiple_named_tensor_errors():
    specs = infomap(int_tensor="DT_INT32", str_tensor="DT_STRING")
    assert "Expecting shape" in fill_error("""{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""", specs).message
    assert "Expecting tensor size" in fill_error("""{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}""", specs).message
    assert "Expecting object but got list" in fill_error("""{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
        [1, 20, 30],
        {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""", specs).message
    assert "Expecting value/list but got object" in fill_error(
        '{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}', infomap(str_tensor="DT_STRING")).message


INT_2x3x2 = ("dtype: DT_INT32 tensor_shape { dim { size: 2 } dim { size: 3 } dim { size: 2 } } "
             + " ".join(f"int_val: {v}" for v in (1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2)))
BYTES_2x2 = ('dtype: DT_STRING tensor_shape { dim { size: 2 } dim { size: 2 } } string_val: "hello" '
             'string_val: "world" string_val: "tf" string_val: "serving"')


@upstream("JsontensorTest.FromJsonSingleTensor")
def test_from_json_single_tensor():
    tensors = {"int_tensor": INT_2x3x2}
    compare_json(make_json(tensors, "row"), '{"predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}')
    compare_json(make_json(tensors, "columnar"), '{"outputs": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}')


@upstream("JsontensorTest.FromJsonSingleScalarTensor")
def test_from_json_single_scalar_tensor():
    tensors = {"int_tensor": "dtype: DT_INT32 tensor_shape { dim { size: 5 } } "
                             "int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5"}
    compare_json(make_json(tensors, "row"), '{ "predictions": [1, 2, 3, 4, 5] }')
    compare_json(make_json(tensors, "columnar"), '{ "outputs": [1, 2, 3, 4, 5] }')


@upstream("JsontensorTest.FromJsonSingleBytesTensor")
def test_from_json_single_bytes_tensor():
    compare_json(make_json({"str_tensor_bytes": BYTES_2x2}, "row"), """{"predictions": [
        [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]}""")


@upstream("JsontensorTest.FromJsonSingleFloatTensorSixDigitPrecision")
def test_from_json_single_float_tensor_six_digit_precision():
    tensors = {"float_tensor": "dtype: DT_FLOAT tensor_shape { dim { size: 2 } dim { size: 3 } } "
                               "float_val: 9000000 float_val: 999999 float_val: 0.50000 float_val: .0003 "
                               "float_val: .00003 float_val: 555557.5"}
    compare_json_all_values_as_strings(make_json(tensors, "row"), """{"predictions": [
        [9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]}""")


@upstream("JsontensorTest.FromJsonSingleFloatTensorNonFinite")
def test_from_json_single_float_tensor_non_finite():
    tensors = {"float_tensor": "dtype: DT_FLOAT tensor_shape { dim { size: 2 } dim { size: 2 } } "
                               "float_val: NaN float_val: Infinity float_val: 3 float_val: -Infinity"}
    compare_json_all_values_as_strings(make_json(tensors, "row"),
                                       '{"predictions": [[NaN, Infinity], [3.0, -Infinity]]}')


def make_json_error(tensors: dict, fmt: str = "row") -> ServingError:
    with pytest.raises(ServingError) as info:
        make_json(tensors, fmt)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return info.value


@upstream("JsontensorTest.FromJsonSingleTensorErrors")
def test_from_json_single_tensor_errors():
    assert "empty tensor map" in make_json_error({}).message
    assert "tensor type: complex64" in make_json_error(
        {"tensor": "dtype: DT_COMPLEX64 tensor_shape { dim { size: 2 } } scomplex_val: 1.0 scomplex_val: 2.0"}).message
    assert "no shape information" in make_json_error({"tensor": "dtype: DT_INT32 int_val: 1"}).message


@upstream("JsontensorTest.FromJsonMultipleNamedTensors")
def test_from_json_multiple_named_tensors():
    tensors = {
        "int_tensor": INT_2x3x2,
        "str_tensor": 'dtype: DT_STRING tensor_shape { dim { size: 2 } dim { size: 2 } } string_val: "foo" '
                      'string_val: "bar" string_val: "baz" string_val: "bat"',
        "float_tensor": "dtype: DT_FLOAT tensor_shape { dim { size: 2 } dim { size: 1 } } float_val: 1.0 float_val: 2.0",
        "double_scalar_tensor": "dtype: DT_DOUBLE tensor_shape { dim { size: 2 } } double_val: 8.0 double_val: 9.0",
        "str_tensor_bytes": BYTES_2x2,
    }
    compare_json(make_json(tensors, "row"), """{"predictions": [
      {"double_scalar_tensor": 8.0, "float_tensor": [1.0], "int_tensor": [[1, 2], [3, 4], [5, 6]],
       "str_tensor": ["foo", "bar"], "str_tensor_bytes": [ {"b64": "aGVsbG8="}, {"b64": "d29ybGQ="} ]},
      {"double_scalar_tensor": 9.0, "float_tensor": [2.0], "int_tensor": [[7, 8], [9, 0], [1, 2]],
       "str_tensor": ["baz", "bat"], "str_tensor_bytes": [ {"b64": "dGY="}, {"b64": "c2VydmluZw=="} ]}]}""")
    compare_json(make_json(tensors, "columnar"), """{"outputs": {
      "double_scalar_tensor": [8.0, 9.0], "float_tensor": [[1.0], [2.0]],
      "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
      "str_tensor": [["foo", "bar"], ["baz", "bat"]],
      "str_tensor_bytes": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]}}""")


@upstream("JsontensorTest.FromJsonMultipleNamedTensorsErrors")
def test_from_json_multiple_named_tensors_errors():
    assert "inconsistent batch size" in make_json_error({
        "int_tensor": "dtype: DT_INT32 tensor_shape { dim { size: 2 } dim { size: 3 } } "
                      "int_val: 1 int_val: 2 int_val: 3 int_val: 4 int_val: 5 int_val: 6",
        "str_tensor": 'dtype: DT_STRING tensor_shape { dim { size: 1 } dim { size: 3 } } '
                      'string_val: "foo" string_val: "bar" string_val: "baz"'}).message


@upstream("JsontensorTest.FromJsonSingleZeroBatchTensor")
def test_from_json_single_zero_batch_tensor():
    compare_json(make_json({"int_tensor": "dtype: DT_INT32 tensor_shape { dim { size: 0 } dim { size: 2 } }"}, "row"),
                 '{ "predictions": [] }')


@upstream("JsontensorTest.FromJsonMultipleZeroBatchTensors")
def test_from_json_multiple_zero_batch_tensors():
    compare_json(make_json({
        "str_tensor": "dtype: DT_STRING tensor_shape { dim { size: 0 } dim { size: 1 } dim { size: 2 } }",
        "float_tensor": "dtype: DT_FLOAT tensor_shape { dim { size: 0 } dim { size: 3 } dim { size: 4 } }"}, "row"),
        '{ "predictions": [] }')


@upstream("JsontensorTest.FromJsonMultipleZeroBatchTensorsErrors")
def test_from_json_multiple_zero_batch_tensors_errors():
    assert "inconsistent batch size" in make_json_error({
        "int_tensor": "dtype: DT_INT32 tensor_shape { dim { size: 0 } dim { size: 2 } }",
        "str_tensor": 'dtype: DT_STRING tensor_shape { dim { size: 1 } dim { size: 2 } } '
                      'string_val: "foo" string_val: "bar"'}).message


def fill_classify_regress(json_text: str, request_type: str):
    """FillClassificationRequestFromJson / FillRegressionRequestFromJson -> parse_json_body +
    example_json.request_from_json: the request proto they fill (model_spec.signature_name
    only when the body names one, as FillSignature sets it)."""
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    from align_tf.serving.example_json import request_from_json

    doc = parse_json_body(json_text.encode())
    signature_name, request_input = request_from_json(doc)
    module = classification_pb2 if request_type == "ClassificationRequest" else regression_pb2
    request = getattr(module, request_type)(input=request_input)
    if "signature_name" in doc:
        request.model_spec.signature_name = signature_name
    return request


def expected_request(text: str, request_type: str):
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    module = classification_pb2 if request_type == "ClassificationRequest" else regression_pb2
    return text_format.Parse(text, getattr(module, request_type)())


def approximately_equal(ours, expected) -> None:
    """MessageDifferencer with approximate floats and NaN equal to NaN: float values compared
    as float32, NaN replaced by one marker in both."""
    def normalized(request):
        copy = type(request)()
        copy.CopyFrom(request)
        which = copy.input.WhichOneof("kind")
        holder = getattr(copy.input, which) if which else None
        examples = list(holder.examples) if holder is not None else []
        if which == "example_list_with_context":
            examples.append(holder.context)
        for example in examples:
            for feature in example.features.feature.values():
                values = [12345.0 if v != v else float(np.float32(v)) for v in feature.float_list.value]
                if feature.WhichOneof("kind") == "float_list":
                    del feature.float_list.value[:]
                    feature.float_list.value.extend(values)
        return copy
    assert normalized(ours) == normalized(expected), (ours, expected)


REQUEST_TYPES = ["ClassificationRequest", "RegressionRequest"]


@pytest.mark.parametrize("request_type", REQUEST_TYPES)
@upstream("ClassifyRegressRequestTest.RequestNoContext")
def test_classify_regress_request_no_context(request_type):
    ours = fill_classify_regress("""
    {
      "examples": [
        { "names": [ "foo", "bar" ], "ratings": [ 8.0, 9.0 ], "age": 20 },
        { "names": [ "baz" ], "ratings": 6.0 }
      ]
    }""", request_type)
    approximately_equal(ours, expected_request("""
    input { example_list {
      examples { features {
        feature { key: "names" value { bytes_list { value: "foo" value: "bar" } } }
        feature { key: "ratings" value { float_list { value: 8.0 value: 9.0 } } }
        feature { key: "age" value { int64_list { value: 20 } } } } }
      examples { features {
        feature { key: "names" value { bytes_list { value: "baz" } } }
        feature { key: "ratings" value { float_list { value: 6.0 } } } } } } }""", request_type))


@pytest.mark.parametrize("request_type", REQUEST_TYPES)
@upstream("ClassifyRegressRequestTest.RequestWithContextAndSignature")
def test_classify_regress_request_with_context_and_signature(request_type):
    ours = fill_classify_regress("""
    {
      "signature_name": "custom_signture",
      "context": { "query": "pizza", "location": [ "sfo" ] },
      "examples": [
        { "names": [ "foo", "bar" ], "ratings": [ 8.0, 9.0, NaN, Infinity ], "age": 20 },
        { "names": [ "baz", { "b64": "aGVsbG8=" } ], "ratings": 6.0, "intboolmix": [ 1, true, false ] },
        { "names": "bar", "ratings": -Infinity }
      ]
    }""", request_type)
    approximately_equal(ours, expected_request("""
    model_spec { signature_name: "custom_signture" }
    input { example_list_with_context {
      context { features {
        feature { key: "query" value { bytes_list { value: "pizza" } } }
        feature { key: "location" value { bytes_list { value: "sfo" } } } } }
      examples { features {
        feature { key: "names" value { bytes_list { value: "foo" value: "bar" } } }
        feature { key: "ratings" value { float_list { value: 8.0 value: 9.0 value: NaN value: Infinity } } }
        feature { key: "age" value { int64_list { value: 20 } } } } }
      examples { features {
        feature { key: "names" value { bytes_list { value: "baz" value: "hello" } } }
        feature { key: "ratings" value { float_list { value: 6.0 } } }
        feature { key: "intboolmix" value { int64_list { value: 1 value: 1 value: 0 } } } } }
      examples { features {
        feature { key: "names" value { bytes_list { value: "bar" } } }
        feature { key: "ratings" value { float_list { value: -Infinity } } } } } } }""", request_type))


@pytest.mark.parametrize("request_type", REQUEST_TYPES)
@upstream("ClassifyRegressRequestTest.JsonErrors")
def test_classify_regress_request_json_errors(request_type):
    cases = [
        ('{"signature_name": [ "hello" ], "examples": [ { "names": [ "foo", "bar" ] } ]}',
         "'signature_name' key must be a string"),
        ('{"context": [ { "names": [ "foo", "bar" ] } ]}', "Example must be JSON object"),
        ('{"examples": { "names": [ "foo", "bar" ] }}', "list/array"),
        ('{"examples": [ [ { "names": [ "foo", "bar" ] } ] ]}', "Example must be JSON object"),
        ('{"examples": [ { "names": [ 10, null ] } ]}', "names has element with unexpected JSON type: Null"),
        ('{"examples": [ { "names": [ 10, 10.0 ] } ]}', "feature: names expecting type: int64"),
        ('{"examples": [ { "names": [ 10, { "test": 10 } ] } ]}',
         "names has element with unexpected JSON type: Object"),
        ('{"examples": [ { "names": [ [10], 20 ] } ]}', "names has element with unexpected JSON type: Array"),
        ('{"examples": [ { "names": [ 20, 18446744073709551603 ] } ]}', "Only int64_t is supported"),
    ]
    for body, words in cases:
        with pytest.raises(ServingError) as info:
            fill_classify_regress(body, request_type)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, body
        assert words in info.value.message, (body, info.value.message)


def classification_columns(text: str):
    """A ClassificationResult (text) as the columns the server's writer takes."""
    from tensorflow_serving.apis import classification_pb2

    result = text_format.Parse(text, classification_pb2.ClassificationResult())
    rows = [[(c.label.encode(), c.score) for c in k.classes] for k in result.classifications]
    width = len(rows[0]) if rows else 0
    labels = np.empty((len(rows), width), dtype=object)
    labels[...] = [[label for label, _ in row] for row in rows] if rows else labels
    scores = np.array([[score for _, score in row] for row in rows], np.float32).reshape(len(rows), width)
    return labels, scores


def regression_values(text: str) -> np.ndarray:
    from tensorflow_serving.apis import regression_pb2

    result = text_format.Parse(text, regression_pb2.RegressionResult())
    return np.array([r.value for r in result.regressions], np.float32)


@upstream("ClassifyRegressnResultTest.JsonFromClassificationResult")
def test_json_from_classification_result():
    from align_tf.serving.example_json import classification_json

    labels, scores = classification_columns("""
        classifications { classes { label: "car" score: 0.2 } classes { label: "bike" score: 0.7 }
                          classes { label: "bus" score: 0.1 } }
        classifications { classes { label: "car" score: 0.7 } classes { label: "bike" score: 0.1 }
                          classes { label: "bus" score: 0.2 } }""")
    compare_json(classification_json(labels, scores).decode(), """{
        "results": [ [ ["car", 0.2], ["bike", 0.7], ["bus", 0.1] ],
                     [ ["car", 0.7], ["bike", 0.1], ["bus", 0.2] ] ] }""")


@upstream("ClassifyRegressnResultTest.JsonFromRegressionResult")
def test_json_from_regression_result():
    from align_tf.serving.example_json import regression_json

    values = regression_values("regressions { value: 0.2 } regressions { value: 0.9 } regressions { value: 1.0 }")
    compare_json(regression_json(values).decode(), '{ "results": [ 0.2, 0.9, 1.0 ] }')


@upstream("ClassifyRegressnResultTest.JsonFromRegressionResultWithNonFinite")
def test_json_from_regression_result_with_non_finite():
    from align_tf.serving.example_json import regression_json

    values = regression_values("regressions { value: 0.2 } regressions { value: Infinity } "
                               "regressions { value: 1.0 } regressions { value: -Infinity } "
                               "regressions { value: NaN }")
    compare_json_all_values_as_strings(regression_json(values).decode(),
                                       '{ "results": [ 0.2, Infinity, 1.0, -Infinity, NaN ] }')


@upstream("ClassifyRegressnResultTest.JsonFromResultErrors")
def test_json_from_result_errors():
    from align_tf.serving.example_json import classification_json, regression_json

    labels, scores = classification_columns("")
    with pytest.raises(ServingError) as info:
        classification_json(labels, scores)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty ClassificationResults" in info.value.message
    with pytest.raises(ServingError) as info:
        regression_json(regression_values(""))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty RegressionResults" in info.value.message


@upstream("MakeJsonFromTensors.StatusOK")
def test_make_json_from_status_ok():
    assert status_to_json(None) == ""


@upstream("MakeJsonFromTensors.StatusError")
def test_make_json_from_status_error():
    for message in ('Bad key: "key"', "Bad key: 'key'"):
        compare_json(status_to_json(ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)),
                     json.dumps({"error": message}))
