"""What predict_util_test.cc and predict_impl_test.cc (tensorflow/serving 2.20) send: the
PredictRequests of their cases, shared by the two ports (test_predict_util.py drives the
servable, test_predict_impl.py the gRPC server)."""

from __future__ import annotations

DT_FLOAT, DT_STRING, DT_BOOL = 1, 7, 10


def predict_request(name="test_model", version=123, signature_name=None, **inputs):
    """A PredictRequest; each input is (dtype, shape or None for no tensor_shape, values)."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    if name is not None:
        request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if signature_name is not None:
        request.model_spec.signature_name = signature_name
    for alias, (dtype, shape, values) in inputs.items():
        proto = request.inputs[alias]
        proto.dtype = dtype
        if shape is not None:
            for size in shape:
                proto.tensor_shape.dim.add(size=size)
        field = {DT_FLOAT: "float_val", DT_STRING: "string_val", DT_BOOL: "bool_val"}[dtype]
        getattr(proto, field).extend(values)
    return request


def scalar_float_output(value: float):
    """The TensorProto upstream expects: DT_FLOAT, an empty tensor_shape, one float_val."""
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto(dtype=DT_FLOAT)
    proto.tensor_shape.SetInParent()
    proto.float_val.append(value)
    return proto


def expected_response(request, outputs: dict, signature_name=None):
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    if signature_name is not None:
        response.model_spec.signature_name = signature_name
    for alias, value in outputs.items():
        response.outputs[alias].CopyFrom(scalar_float_output(value))
    return response
