"""The two wire codecs in-process: TF Serving's JSON tensor format (align_tf/serving/json_tensor.py)
against the rules of TF Serving's util/json_tensor.cc, and the checked TensorProto decoder
(align_tf/serving/tensor_proto.py) against TensorFlow's own `tf.make_ndarray`."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf

from align_tf.errors import ServingError
from align_tf.serving.json_tensor import json_to_array, outputs_to_json, parse_json_body
from align_tf.serving.limits import RequestLimits
from align_tf.serving.tensor_proto import decode_tensors, encode_tensor_proto

INTEGER_DTYPES = [tf.int8, tf.int16, tf.int32, tf.int64, tf.uint8, tf.uint16, tf.uint32, tf.uint64]


def refused(value, dtype, words: str):
    with pytest.raises(ServingError) as info:
        json_to_array(value, dtype, "x", may_hold_bools=True)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.message, info.value.message


# What AddValueToTensor (json_tensor.cc) takes for each integer dtype: IsInt (int32 range) for
# int8 / int16 / int32 / uint8, then cast by Tensor::FromProto (so 300 as uint8 is 44); IsInt64;
# IsUint; IsUint64. uint16 is not among its cases: UNIMPLEMENTED.
TAKES = {"int8": (-2 ** 31, 2 ** 31 - 1), "int16": (-2 ** 31, 2 ** 31 - 1), "int32": (-2 ** 31, 2 ** 31 - 1),
         "uint8": (-2 ** 31, 2 ** 31 - 1), "int64": (-2 ** 63, 2 ** 63 - 1), "uint32": (0, 2 ** 32 - 1),
         "uint64": (0, 2 ** 64 - 1)}


@pytest.mark.parametrize("dtype", [d for d in INTEGER_DTYPES if d.name in TAKES], ids=lambda d: d.name)
@pytest.mark.parametrize("fast", [True, False])
def test_integer_inputs_take_json_integers_as_tf_serving_does(dtype, fast):
    """AddValueToTensor: integer dtypes take JSON integers only, within what IsInt / IsInt64 /
    IsUint / IsUint64 accept; narrower dtypes wrap as TensorFlow's cast does; a decimal (even
    101.0), a bool, a string, null or an object is a type error naming TF's dtype."""
    low, high = TAKES[dtype.name]
    out = json_to_array([[low, high], [0, 1]], dtype, "x", may_hold_bools=not fast)
    expected = np.array([[low, high], [0, 1]], dtype=np.int64 if low < 0 else np.uint64).astype(dtype.as_numpy_dtype)
    assert out.dtype == dtype.as_numpy_dtype and out.tolist() == expected.tolist()
    for bad in (high + 1, low - 1, 101.0, True, "7", None, {"b64": "AA=="}):
        with pytest.raises(ServingError) as info:
            json_to_array([[1, bad]], dtype, "x", may_hold_bools=isinstance(bad, bool) or not fast)
        assert f"is not of expected type: {dtype.name}" in info.value.message, (bad, info.value.message)


def test_uint16_and_half_inputs_are_not_converted_from_json():
    """AddValueToTensor's default case: "Conversion of JSON Value: 1 to type: uint16" (UNIMPLEMENTED)."""
    for dtype, name in ((tf.uint16, "uint16"), (tf.float16, "half")):
        with pytest.raises(ServingError) as info:
            json_to_array([1], dtype, "x")
        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED
        assert info.value.message == f"Conversion of JSON Value: 1 to type: {name}"


def test_float_inputs_take_any_number_converted_to_the_nearest_float():
    """Since TF Serving 2.5 (json_tensor_test.cc FloatTensorWithPrecisionLoss, ...ExceedsMaxReturnsInf):
    a float input takes any JSON number, as rapidjson's GetFloat converts it (2**24 + 1 and
    1435774380 to the nearest float, 1e39 to inf, 1e-46 to 0); bools and strings are type errors."""
    assert json_to_array([1, 2 ** 24 - 1, 0.5, float("nan")], tf.float32, "x").dtype == np.float32
    out = json_to_array([2 ** 24 + 1, 1435774380, 1e39, -1e39, 1e-46], tf.float32, "x")
    assert out.tolist() == [16777216.0, 1435774336.0, float("inf"), float("-inf"), 0.0]
    assert json_to_array([2 ** 53 + 1, 1e39], tf.float64, "x").tolist() == [2.0 ** 53, 1e39]
    refused([True], tf.float32, "Type: True is not of expected type: float")
    refused(["1.5"], tf.float32, 'JSON Value: "1.5" Type: String is not of expected type: float')
    refused([1], tf.bool, "is not of expected type: bool")
    assert json_to_array([True, False], tf.bool, "x", may_hold_bools=False).tolist() == [True, False]


def test_shapes_follow_the_first_elements_and_nesting_is_bounded():
    """GetDenseTensorShape / FillTensorProto: the shape comes from the first elements; a list of
    another size or a value at another depth is refused; rank past the bound is refused before
    numpy sees it (numpy stops at 64 dimensions)."""
    refused([[1, 2], [3]], tf.int32, "Encountered list at unexpected size: 1 at level: 1 expected size: 2")
    refused([[1, 2], 3], tf.int32, "found at incorrect level: 2 in the JSON DOM. Expected at level: 2")
    refused([["a"], [["b"]]], tf.string, "Encountered list at unexpected level: 2 expected < 2")
    deep = "a"
    for _ in range(70):
        deep = [deep]
    refused(deep, tf.string, "tensor parsing error: x (JSON lists nested more than 32 deep")
    assert json_to_array([[]], tf.string, "x").shape == (1, 0)


def test_strings_bytes_and_body_parsing():
    assert json_to_array(["a", {"b64": "/wA="}], tf.string, "x").tolist() == [b"a", b"\xff\x00"]
    refused([{"b64": "!!"}], tf.string, "Unable to base64 decode")
    refused([{"b64": "YQ==", "more": 1}], tf.string, "not formatted correctly for base64 data")
    refused([{"a": 1}], tf.float32, "Type: Object is not of expected type: float")
    body = parse_json_body(b'{"inputs": ["caf\xc3\xa9", "raw \xff byte"]}')
    assert json_to_array(body["inputs"], tf.string, "x").tolist() == ["café".encode(), b"raw \xff byte"]
    for raw, words in ((b"", "The document is empty"), (b"[1]", "Is not object"),
                       (b'{"x": 1e400}', "Number too big"), (b"[" * 50_000, "JSON Parse error")):
        with pytest.raises(ServingError) as info:
            parse_json_body(raw)
        assert words in info.value.message, raw[:20]
    assert parse_json_body(b'{"x": [NaN, -Infinity, 1e-400]}')["x"][2] == 0.0


def test_floats_are_written_as_tf_serving_writes_them():
    """WriteDecimal: "%g" (six significant digits) when it reads back as the same float, else
    max_digits10 (9) digits; ".0" after whole numbers. json_tensor.cc's own comment gives
    9000000 -> 9e+06 and .00003 -> 3e-05; 0.123456789f needs nine digits (0.123456791)."""
    values = np.array([0.1, 1.0, 9e6, 3e-5, 0.123456789, -2.5, np.nan, np.inf, -np.inf], np.float32)
    assert outputs_to_json({"y": values}, "columnar") == \
        '{"outputs": [0.1,1.0,9e+06,3e-05,0.123456791,-2.5,NaN,Infinity,-Infinity]}'
    rng = np.random.default_rng(0)
    floats = rng.standard_normal(1000).astype(np.float32)
    text = outputs_to_json({"y": floats}, "columnar")
    tokens = text[len('{"outputs": ['):-2].split(",")
    assert np.array_equal(np.array(tokens, dtype=np.float64).astype(np.float32), floats)  # exact
    assert all(len(t.lstrip("-").split("e")[0].replace(".", "").lstrip("0")) <= 9 for t in tokens)


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5, -2], np.float64), np.array([[7, -8]], np.int32),
    np.array([2 ** 40], np.int64), np.array([255], np.uint8), np.array([True, False]), np.array([0.5], np.float16),
    np.array([[b"a", b"\xff\x00"]], object), np.zeros((0, 3), np.float32)], ids=lambda a: f"{a.dtype}{list(a.shape)}")
@pytest.mark.parametrize("content", [False, True], ids=["typed", "tensor_content"])
def test_tensor_protos_decode_as_tensorflow_does(array, content):
    """Our encoder's protos, and TensorFlow's own make_tensor_proto output, decode to what
    tf.make_ndarray reads from them."""
    limits = RequestLimits()
    for proto in (encode_tensor_proto(array, content), tf.make_tensor_proto(array)):
        ours, theirs = decode_tensors({"x": proto}, limits)["x"], tf.make_ndarray(proto)
        assert ours.shape == theirs.shape and ours.tolist() == theirs.tolist()
        assert ours.dtype == theirs.dtype or ours.dtype == object


def test_short_value_lists_are_padded_as_tensorflow_pads_them():
    """Tensor::FromProto (tensorflow/core/framework/tensor.cc, FromProtoField): fewer typed
    values than the shape -> the last value repeated, zeros when none; more -> the first ones
    (tf.make_ndarray agrees on padding and fails on the extra values)."""
    from tensorflow.core.framework import tensor_pb2

    cases = [(1, [4], {"float_val": [1.0, 2.0]}, [1.0, 2.0, 2.0, 2.0]), (3, [3], {}, [0, 0, 0]),
             (7, [4], {"string_val": [b"a", b"b"]}, [b"a", b"b", b"b", b"b"]),
             (3, [2], {"int_val": [5, 6, 7]}, [5, 6])]
    for dtype, shape, values, expected in cases:
        proto = tensor_pb2.TensorProto(dtype=dtype, **values)
        for size in shape:
            proto.tensor_shape.dim.add(size=size)
        assert decode_tensors({"x": proto}, RequestLimits())["x"].tolist() == expected
        if len(expected) >= sum(len(v) for v in values.values()):
            assert tf.make_ndarray(proto).tolist() == expected


def test_declared_sizes_are_refused_before_decoding():
    from tensorflow.core.framework import tensor_pb2

    limits = RequestLimits(max_decoded_bytes=1 << 20)
    for dtype, shape, values in ((7, [2 ** 31], {}), (7, [64], {"string_val": [b"x" * 20_000]}),
                                 (1, [2 ** 31, 2 ** 31], {"float_val": [1.0]})):
        proto = tensor_pb2.TensorProto(dtype=dtype, **values)
        for size in shape:
            proto.tensor_shape.dim.add(size=size)
        with pytest.raises(ServingError, match="once decoded; the limit is 1048576 bytes"):
            decode_tensors({"x": proto}, limits)
    # Shapes TensorShape::IsValid refuses: a negative dimension, more elements than an int64
    # counts (2**62 x 2**62), and (this server's bound) more than 32 dimensions.
    for shape, words in (([-1], "negative dimension"), ([2 ** 62, 2 ** 62], "more elements than an int64"),
                         ([1] * 33, "rank 33")):
        proto = tensor_pb2.TensorProto(dtype=1, float_val=[1.0])
        for size in shape:
            proto.tensor_shape.dim.add(size=size)
        with pytest.raises(ServingError, match=words):
            decode_tensors({"x": proto}, limits)


def test_the_client_holds_the_same_bounds():
    """AlignServingClient refuses, before sending, inputs past 32 dimensions or past
    max_message_bytes, and decodes a reply with the checked decoder: a real gRPC server on
    127.0.0.1 whose reply declares 2**31 strings gets INVALID_ARGUMENT, not 2**31 allocations."""
    from concurrent import futures

    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from align_tf.errors import InputError
    from align_tf.serving.client import AlignServingClient
    from support import free_port

    class HostileServer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            response = predict_pb2.PredictResponse()
            response.outputs["y"].dtype = 7
            response.outputs["y"].tensor_shape.dim.add(size=2 ** 31)
            return response

    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(HostileServer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        with AlignServingClient(f"127.0.0.1:{port}", "m", retries=0, max_message_bytes=4096) as client:
            with pytest.raises(InputError, match="33 dimensions; at most 32"):
                client.predict("s", {"x": np.zeros([1] * 33, np.float32)})
            with pytest.raises(ServingError, match="more than max_message_bytes 4096") as info:
                client.predict("s", {"x": np.zeros(2048, np.float32)})
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(ServingError, match="reply's tensors .* would take") as info:
                client.embed_text(["a"])
            assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(grace=None)
