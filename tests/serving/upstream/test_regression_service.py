"""tensorflow/serving 2.20 tensorflow_serving/servables/tensorflow/regression_service_test.cc,
ported: each case's request sent over gRPC Regress to the local server holding the model as
`test_model` (servable_harness.py), asserting the status code or the whole response upstream
asserts.

Upstream serves TensorFlow's cc/saved_model/testdata/half_plus_two (version 00000123), written
by the same half_plus_two generator as TF Serving's saved_model_half_plus_two_cpu, which is
served here. Not applicable (not_applicable.py): ModelSpecOverride (RegressWithModelSpec, an
in-process entry point taking a ModelSpec apart from the request; the wire has only the
request's). ThreadPoolOptions: the response is asserted as upstream does; the count of closures
run on the caller's CountingThreadPool is an in-process observation with no wire form.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import text_format

from servable_harness import TEST_MODEL, call, servable_server

UPSTREAM = "servables/tensorflow/regression_service_test.cc"
REQUEST = """
model_spec { name: "test_model" signature_name: "regress_x_to_y" }
input { example_list { examples { features {
  feature: { key: "x" value: { float_list: { value: [ 80.0 ] } } }
  feature: { key: "locale" value: { bytes_list: { value: [ "pt_BR" ] } } }
  feature: { key: "age" value: { float_list: { value: [ 19.0 ] } } }
} } } }"""
EXPECTED = """
result { regressions { value: 42 } }
model_spec { name: "test_model" signature_name: "regress_x_to_y" version { value: 123 } }"""


def upstream(case):
    return pytest.mark.upstream(UPSTREAM, case)


@pytest.fixture(scope="module")
def stub(upstream_models):
    with servable_server(upstream_models["saved_model_half_plus_two_cpu"]) as stub:
        yield stub


def parse(text, message_type):
    return text_format.Parse(text, message_type())


@upstream("InvalidModelSpec")
def test_invalid_model_spec(stub):
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest()
    assert call(stub.Regress, request)[0] == grpc.StatusCode.INVALID_ARGUMENT  # no model_spec
    request.model_spec.SetInParent()
    assert call(stub.Regress, request)[0] == grpc.StatusCode.INVALID_ARGUMENT  # no model name
    request.model_spec.name = "foo"
    assert call(stub.Regress, request)[0] == grpc.StatusCode.NOT_FOUND


@upstream("InvalidSignature")
def test_invalid_signature(stub):
    from tensorflow_serving.apis import regression_pb2

    request = parse('model_spec { name: "test_model" signature_name: "invalid_signature_name" }',
                    regression_pb2.RegressionRequest)
    assert call(stub.Regress, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


@upstream("RegressionSuccess")
def test_regression_success(stub):
    from tensorflow_serving.apis import regression_pb2

    code, details, response = call(stub.Regress, parse(REQUEST, regression_pb2.RegressionRequest))
    assert code == grpc.StatusCode.OK, details
    assert response == parse(EXPECTED, regression_pb2.RegressionResponse)
    assert response.model_spec.name == TEST_MODEL


@upstream("ThreadPoolOptions")
def test_thread_pool_options(stub):
    from tensorflow_serving.apis import regression_pb2

    code, details, response = call(stub.Regress, parse(REQUEST, regression_pb2.RegressionRequest))
    assert code == grpc.StatusCode.OK, details
    assert response == parse(EXPECTED, regression_pb2.RegressionResponse)
