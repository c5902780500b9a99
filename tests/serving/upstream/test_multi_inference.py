"""tensorflow/serving 2.20 tensorflow_serving/servables/tensorflow/multi_inference_test.cc, ported:
each typed case for both of upstream's model types, its request sent over gRPC MultiInference to
the local server holding the model as `test_model` (servable_harness.py), asserting the status
code and message words or the whole response upstream asserts.

Model types, as upstream's SetUpTestSuite sets them: `tf1` is TensorFlow's
cc/saved_model/testdata/half_plus_two (TF Serving's saved_model_half_plus_two_cpu here, the same
generator) with the signature method-name check on; `tf2` is saved_model_half_plus_two_tf2_cpu
with the check off (native TF2 signatures all say "predict").

Upstream runs each request twice in-process, through `TensorFlowMultiInferenceRunner::Infer` and
`RunMultiInference`, both handed `servable_version_ = 1`; over the wire both are the one RPC, and
the version in each result's model_spec is the served one (123, the model's version folder).
ThreadPoolOptions: the response is asserted as upstream does; the count of closures run on the
caller's CountingThreadPool is an in-process observation with no wire form.
"""

from __future__ import annotations

import grpc
import pytest

from servable_harness import TEST_MODEL, call, servable_server

UPSTREAM = "servables/tensorflow/multi_inference_test.cc"
CLASSIFY = "tensorflow/serving/classify"   # kClassifyMethodName
REGRESS = "tensorflow/serving/regress"     # kRegressMethodName
PREDICT = "tensorflow/serving/predict"     # kPredictMethodName
SERVED_VERSION = 123
MODELS = {"tf1": ("saved_model_half_plus_two_cpu", True), "tf2": ("saved_model_half_plus_two_tf2_cpu", False)}


def upstream(case):
    return pytest.mark.upstream(UPSTREAM, case)


@pytest.fixture(scope="module", params=sorted(MODELS))
def stub(request, upstream_models):
    name, method_check = MODELS[request.param]
    with servable_server(upstream_models[name], method_name_check=method_check) as stub:
        yield stub


def add_input(features: dict, request) -> None:
    """AddInput: one example of float features."""
    example = request.input.example_list.examples.add()
    for key, value in features.items():
        example.features.feature[key].float_list.value.append(value)


def populate_task(signature_name: str, method_name: str, request) -> None:
    """PopulateTask."""
    task = request.tasks.add()
    task.model_spec.name = TEST_MODEL
    task.model_spec.signature_name = signature_name
    task.method_name = method_name


def expect_status_error(stub, request, code, words: str) -> None:
    """ExpectStatusError: the code, and the message containing the words."""
    got, details, _ = call(stub.MultiInference, request)
    assert got == code, details
    assert words in details, details


def new_request():
    from tensorflow_serving.apis import inference_pb2

    return inference_pb2.MultiInferenceRequest()


def expected_response(request, results):
    """The expected MultiInferenceResponse: per task its model_spec with the served version and
    its result (("regress", value) or ("classify", score))."""
    from tensorflow_serving.apis import inference_pb2

    response = inference_pb2.MultiInferenceResponse()
    for task, (kind, value) in zip(request.tasks, results):
        result = response.results.add()
        result.model_spec.CopyFrom(task.model_spec)
        result.model_spec.version.value = SERVED_VERSION
        if kind == "regress":
            result.regression_result.regressions.add().value = value
        else:
            result.classification_result.classifications.add().classes.add().score = value
    return response


def expect_response(stub, request, results) -> None:
    code, details, response = call(stub.MultiInference, request)
    assert code == grpc.StatusCode.OK, details
    assert response == expected_response(request, results)


@upstream("MissingInputTest")
def test_missing_input(stub):
    request = new_request()
    populate_task("regress_x_to_y", REGRESS, request)
    expect_status_error(stub, request, grpc.StatusCode.INVALID_ARGUMENT, "Input is empty")


@upstream("UndefinedSignatureTest")
def test_undefined_signature(stub):
    request = new_request()
    add_input({"x": 2}, request)
    populate_task("ThisSignatureDoesNotExist", REGRESS, request)
    expect_status_error(stub, request, grpc.StatusCode.INVALID_ARGUMENT, "signature not found")


@upstream("InconsistentModelSpecsInRequestTest")
def test_inconsistent_model_specs_in_request(stub):
    request = new_request()
    add_input({"x": 2}, request)
    populate_task("regress_x_to_y", REGRESS, request)
    task = request.tasks.add()
    task.model_spec.name = "ModelDoesNotExist"
    task.model_spec.signature_name = "regress_x_to_y"
    task.method_name = REGRESS
    expect_status_error(stub, request, grpc.StatusCode.INVALID_ARGUMENT, "must access the same model name")


@upstream("EvaluateDuplicateSignaturesTest")
def test_evaluate_duplicate_signatures(stub):
    request = new_request()
    add_input({"x": 2}, request)
    populate_task("regress_x_to_y", REGRESS, request)
    populate_task("regress_x_to_y", REGRESS, request)
    expect_status_error(stub, request, grpc.StatusCode.INVALID_ARGUMENT,
                        "Duplicate evaluation of signature: regress_x_to_y")


@upstream("UsupportedSignatureTypeTest")
def test_usupported_signature_type(stub):
    request = new_request()
    add_input({"x": 2}, request)
    populate_task("serving_default", PREDICT, request)
    expect_status_error(stub, request, grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature")


@upstream("ValidSingleSignatureTest")
def test_valid_single_signature(stub):
    request = new_request()
    add_input({"x": 2}, request)
    populate_task("regress_x_to_y", REGRESS, request)
    expect_response(stub, request, [("regress", 3.0)])


@upstream("MultipleValidRegressSignaturesTest")
def test_multiple_valid_regress_signatures(stub):
    request = new_request()
    add_input({"x": 2}, request)
    populate_task("regress_x_to_y", REGRESS, request)    # y = 0.5x + 2
    populate_task("regress_x_to_y2", REGRESS, request)   # y2 = 0.5x + 3
    expect_response(stub, request, [("regress", 3.0), ("regress", 4.0)])


@upstream("RegressAndClassifySignaturesTest")
def test_regress_and_classify_signatures(stub):
    request = new_request()
    add_input({"x": 2}, request)
    populate_task("regress_x_to_y", REGRESS, request)
    populate_task("classify_x_to_y", CLASSIFY, request)
    expect_response(stub, request, [("regress", 3.0), ("classify", 3.0)])


@upstream("ThreadPoolOptions")
def test_thread_pool_options(stub):
    request = new_request()
    add_input({"x": 2}, request)
    populate_task("regress_x_to_y", REGRESS, request)
    expect_response(stub, request, [("regress", 3.0)])
