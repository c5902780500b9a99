"""tensorflow/serving 2.20 tensorflow_serving/servables/tensorflow/predict_impl_test.cc, ported:
TensorflowPredictor::Predict (model lookup, then RunPredict) is the gRPC Predict of `align-tf
serve`, started by `run_server` with upstream's server cores: test_model over TensorFlow's
half_plus_two test model, and test_model over saved_model_counter.

ThreadPoolFactory: the response is checked as upstream checks it; its count of tasks run on a
fake thread pool is an in-process C++ hook with no wire form. ModelSpecOverride is not applicable
(not_applicable.py)."""

from __future__ import annotations

import grpc
import pytest

from predict_cases import DT_FLOAT, DT_STRING, expected_response, predict_request

UPSTREAM = "servables/tensorflow/predict_impl_test.cc"


def upstream(case):
    return pytest.mark.upstream(UPSTREAM, case)


@pytest.fixture(scope="module")
def core(upstream_models, run_server):
    return run_server("test_model", upstream_models["half_plus_two"])[1]


@pytest.fixture(scope="module")
def counter_core(upstream_models, run_server):
    return run_server("test_model", upstream_models["saved_model_counter"])[1]


def predict(address, request):
    """(status code, details, response or None)."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return grpc.StatusCode.OK, "", prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 20)
        except grpc.RpcError as e:
            return e.code(), e.details(), None


@upstream("PredictImplTest.MissingOrEmptyModelSpec")
def test_missing_or_empty_model_spec(core):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    assert predict(core, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    request.model_spec.ClearField("name")
    assert predict(core, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


@upstream("PredictImplTest.EmptyInputList")
def test_empty_input_list(core):
    assert predict(core, predict_request())[0] == grpc.StatusCode.INVALID_ARGUMENT


@upstream("PredictImplTest.InputTensorsDontMatchModelSpecInputs")
def test_input_tensors_dont_match_model_spec_inputs(core):
    request = predict_request(key=(DT_STRING, [1], [b"any_key"]))
    assert predict(core, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


@upstream("PredictImplTest.OutputFiltersDontMatchModelSpecOutputs")
def test_output_filters_dont_match_model_spec_outputs(core):
    request = predict_request(x=(DT_FLOAT, None, [2.0]))
    request.output_filter.append("output_filter")
    assert predict(core, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    del request.output_filter[:]
    request.output_filter.append("y")
    assert predict(core, request)[0] == grpc.StatusCode.OK
    request.output_filter.append("y")
    assert predict(core, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


@upstream("PredictImplTest.InputTensorsHaveWrongType")
def test_input_tensors_have_wrong_type(core):
    request = predict_request(x=(DT_STRING, [1], [b"any_value"]))
    request.output_filter.append("y")
    assert predict(core, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


@upstream("PredictImplTest.PredictionSuccess")
def test_prediction_success(core):
    request = predict_request(x=(DT_FLOAT, None, [2.0]))
    code, details, response = predict(core, request)
    assert code == grpc.StatusCode.OK, details
    assert response == expected_response(request, {"y": 3.0}, "serving_default")


@upstream("PredictImplTest.PredictionWithNamedRegressionSignature")
def test_prediction_with_named_regression_signature(core):
    request = predict_request(signature_name="regress_x2_to_y3", inputs=(DT_FLOAT, None, [2.0]))
    code, details, response = predict(core, request)
    assert code == grpc.StatusCode.OK, details
    assert response == expected_response(request, {"outputs": 4.0})


@upstream("PredictImplTest.PredictionWithNamedClassificationSignature")
def test_prediction_with_named_classification_signature(core):
    request = predict_request(signature_name="classify_x2_to_y3", inputs=(DT_FLOAT, None, [2.0]))
    code, details, response = predict(core, request)
    assert code == grpc.StatusCode.OK, details
    assert response == expected_response(request, {"scores": 4.0})


@upstream("PredictImplTest.PredictionWithCustomizedSignatures")
def test_prediction_with_customized_signatures(counter_core):
    """get_counter, incr_counter, reset_counter, incr_counter (output filter), incr_counter_by(3)."""
    steps = [("get_counter", {}, (), 0.0), ("incr_counter", {}, (), 1.0), ("reset_counter", {}, (), 0.0),
             ("incr_counter", {}, ("output",), 1.0), ("incr_counter_by", {"delta": (DT_FLOAT, None, [3.0])}, (), 4.0)]
    for signature_name, inputs, output_filter, value in steps:
        request = predict_request(signature_name=signature_name, **inputs)
        request.output_filter.extend(output_filter)
        code, details, response = predict(counter_core, request)
        assert code == grpc.StatusCode.OK, (signature_name, details)
        assert response == expected_response(request, {"output": value}), signature_name


@upstream("PredictImplTest.ThreadPoolFactory")
def test_thread_pool_factory(core):
    request = predict_request(x=(DT_FLOAT, None, [2.0]))
    code, details, response = predict(core, request)
    assert code == grpc.StatusCode.OK, details
    assert response == expected_response(request, {"y": 3.0}, "serving_default")
