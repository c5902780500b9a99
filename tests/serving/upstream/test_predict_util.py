"""tensorflow/serving 2.20 tensorflow_serving/servables/tensorflow/predict_util_test.cc, ported at
the servable level, as upstream tests it: RunPredict over a loaded SavedModel bundle is
`LoadedVersion.run` (align_tf/serving/server/versions.py) over the same SavedModel, loaded in
this process as `align-tf serve` loads it, with the PredictResponse built as the gRPC service
builds it. Models: TensorFlow's half_plus_two test model, saved_model_counter, and a model
without signatures (bad_half_plus_two).

ThreadPoolOptions: the response is checked as upstream checks it; its count of tasks run on a
caller-supplied thread pool is an in-process C++ hook with no wire form. MethodNameCheck:
upstream runs a fake Session that echoes its inputs; here the real one runs (the check under
test comes before the Session either way)."""

from __future__ import annotations

import os

import grpc
import pytest

from align_tf.errors import ServingError
from predict_cases import DT_BOOL, DT_FLOAT, DT_STRING, expected_response, predict_request

UPSTREAM = "servables/tensorflow/predict_util_test.cc"


def upstream(case):
    return pytest.mark.upstream(UPSTREAM, case)


def load(path: str, version: int = 123, **options):
    from align_tf.serving.server.versions import LoadedVersion

    return LoadedVersion("test_model", version, os.path.join(path, f"{version:08d}"), **options)


@pytest.fixture(scope="module")
def bundle(upstream_models):
    return load(upstream_models["half_plus_two"])


@pytest.fixture(scope="module")
def counter_bundle(upstream_models):
    return load(upstream_models["saved_model_counter"])


def run_predict(bundle, request):
    """RunPredict(meta_graph_def, version, session, request, response): the response, or the
    ServingError (its status)."""
    from align_tf.serving.server import replies
    from align_tf.serving.tensor_proto import encode_tensor_proto
    from tensorflow_serving.apis import predict_pb2

    signature_name = request.model_spec.signature_name or "serving_default"
    outputs = bundle.run(signature_name, dict(request.inputs), tuple(request.output_filter))
    response = predict_pb2.PredictResponse(
        model_spec=replies.model_spec(request.model_spec.name, bundle.version, signature_name))
    for alias, array in outputs.items():
        response.outputs[alias].CopyFrom(encode_tensor_proto(array))
    return response


def status_of(bundle, request) -> tuple[grpc.StatusCode, str]:
    try:
        run_predict(bundle, request)
    except ServingError as e:
        return e.code, e.message
    return grpc.StatusCode.OK, ""


@upstream("PredictImplTest.MissingOrEmptyModelSpec")
def test_missing_or_empty_model_spec(bundle):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    assert status_of(bundle, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    request.model_spec.ClearField("name")
    assert status_of(bundle, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    request.model_spec.name = "test"
    assert status_of(bundle, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


@upstream("PredictImplTest.EmptyInputList")
def test_empty_input_list(bundle):
    assert status_of(bundle, predict_request())[0] == grpc.StatusCode.INVALID_ARGUMENT


@upstream("PredictImplTest.InputTensorsDontMatchModelSpecInputs")
def test_input_tensors_dont_match_model_spec_inputs(bundle):
    request = predict_request(unknown_key1=(DT_STRING, [1], [b"any_value"]), unknown_key2=(DT_FLOAT, [1], [1.0]))
    code, message = status_of(bundle, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Sent extra: {unknown_key1,unknown_key2}" in message
    assert "Missing but required: {x}" in message


@upstream("PredictImplTest.PredictionInvalidTensor")
def test_prediction_invalid_tensor(bundle):
    code, message = status_of(bundle, predict_request(x=(DT_BOOL, None, [True])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expects arg[0] to be float but bool is provided" in message


@upstream("PredictImplTest.OutputFiltersDontMatchModelSpecOutputs")
def test_output_filters_dont_match_model_spec_outputs(bundle):
    request = predict_request(x=(DT_FLOAT, None, [2.0]))
    request.output_filter.append("output_filter")
    code, message = status_of(bundle, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: output_filter" in message
    del request.output_filter[:]
    request.output_filter.append("y")
    assert status_of(bundle, request)[0] == grpc.StatusCode.OK
    request.output_filter.append("y")
    code, message = status_of(bundle, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "duplicate output tensor alias: y" in message


@upstream("PredictImplTest.InputTensorsHaveWrongType")
def test_input_tensors_have_wrong_type(bundle):
    request = predict_request(x=(DT_STRING, [1], [b"any_value"]))
    request.output_filter.append("y")
    code, message = status_of(bundle, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "to be float but string is provided" in message


@upstream("PredictImplTest.ModelMissingSignatures")
def test_model_missing_signatures(upstream_models):
    bad = load(upstream_models["bad_half_plus_two"])
    assert status_of(bad, predict_request())[0] == grpc.StatusCode.FAILED_PRECONDITION


@upstream("PredictImplTest.PredictionSuccess")
def test_prediction_success(bundle):
    request = predict_request(x=(DT_FLOAT, None, [2.0]))
    assert run_predict(bundle, request) == expected_response(request, {"y": 3.0}, "serving_default")


@upstream("PredictImplTest.PredictionWithNamedRegressionSignature")
def test_prediction_with_named_regression_signature(bundle):
    request = predict_request(signature_name="regress_x2_to_y3", inputs=(DT_FLOAT, None, [2.0]))
    assert run_predict(bundle, request) == expected_response(request, {"outputs": 4.0})


@upstream("PredictImplTest.PredictionWithNamedClassificationSignature")
def test_prediction_with_named_classification_signature(bundle):
    request = predict_request(signature_name="classify_x2_to_y3", inputs=(DT_FLOAT, None, [2.0]))
    assert run_predict(bundle, request) == expected_response(request, {"scores": 4.0})


@upstream("PredictImplTest.PredictionWithCustomizedSignatures")
def test_prediction_with_customized_signatures(counter_bundle):
    steps = [("get_counter", {}, (), 0.0), ("incr_counter", {}, (), 1.0), ("reset_counter", {}, (), 0.0),
             ("incr_counter", {}, ("output",), 1.0), ("incr_counter_by", {"delta": (DT_FLOAT, None, [3.0])}, (), 4.0)]
    for signature_name, inputs, output_filter, value in steps:
        request = predict_request(signature_name=signature_name, **inputs)
        request.output_filter.extend(output_filter)
        assert run_predict(counter_bundle, request) == expected_response(request, {"output": value}), signature_name


@upstream("PredictImplTest.ThreadPoolOptions")
def test_thread_pool_options(bundle):
    request = predict_request(x=(DT_FLOAT, None, [2.0]))
    assert run_predict(bundle, request) == expected_response(request, {"y": 3.0}, "serving_default")


@upstream("PredictImplTest.MethodNameCheck")
def test_method_name_check(upstream_models):
    checked = load(upstream_models["half_plus_two"])
    signature = checked.signature_defs["serving_default"]
    request = predict_request(x=(DT_FLOAT, None, [2.0]))
    checked.method_name_check = True
    signature.method_name = "tensorflow/serving/predict"
    assert status_of(checked, request)[0] == grpc.StatusCode.OK
    signature.method_name = "not/supported/method"
    assert status_of(checked, request)[0] != grpc.StatusCode.OK
    checked.method_name_check = False
    signature.method_name = "tensorflow/serving/predict"
    assert status_of(checked, request)[0] == grpc.StatusCode.OK
    signature.method_name = "not/supported/method"
    assert status_of(checked, request)[0] == grpc.StatusCode.OK
