"""Helpers of tensorflow_model_server_test_base.py (tensorflow/serving 2.20,
model_servers/test_util/), ported: VerifyPredictRequest, CallREST, SortedObject, _GetModelVersion.
The server side (RunServer) is the `run_server` fixture of conftest.py."""

from __future__ import annotations

import json
import os
import time
import urllib.request

RPC_TIMEOUT = 5.0


def get_model_version(model_path: str) -> int:
    """_GetModelVersion: the one int-valued folder name under the model path."""
    return int(os.listdir(model_path)[0]) if len(os.listdir(model_path)) == 1 else \
        int(next(n for n in sorted(os.listdir(model_path)) if n.isdigit()))


def verify_model_spec(actual, name: str, signature_name: str, version: int) -> None:
    """_VerifyModelSpec."""
    assert actual.name == name
    assert actual.signature_name == signature_name
    assert actual.version.value == version


def verify_predict_request(address: str, expected_output: float, expected_version: int,
                           model_name: str = "default", specify_output: bool = True,
                           batch_input: bool = False, signature_name: str = "serving_default",
                           rpc_timeout: float = RPC_TIMEOUT) -> None:
    """VerifyPredictRequest: x = [2.0] (or [[2.0]] with batch_input) as DT_FLOAT, optionally
    output_filter 'y'; asserts one float in outputs['y'] equal to expected_output and the
    response's model_spec."""
    import grpc
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, rpc_timeout)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, request.model_spec.name, signature_name, expected_version)


def call_rest(url: str, req, max_attempts: int = 60) -> bytes:
    """CallREST: POST the JSON of req (GET when None), retrying each second on any error."""
    for attempt in range(max_attempts):
        try:
            data = json.dumps(req).encode("utf-8") if req is not None else None
            with urllib.request.urlopen(urllib.request.Request(url, data=data)) as resp:
                return resp.read()
        except Exception:  # noqa: BLE001  (upstream retries on any error)
            if attempt == max_attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def sorted_object(obj):
    """SortedObject: nested lists and dicts sorted, for order-free comparison."""
    if isinstance(obj, dict):
        return sorted((k, sorted_object(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return sorted(sorted_object(x) for x in obj)
    if isinstance(obj, tuple):
        return list(sorted(sorted_object(x) for x in obj))
    return obj
