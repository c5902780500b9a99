"""tensorflow/serving 2.20 tensorflow_serving/servables/tensorflow/get_model_metadata_impl_test.cc,
ported (the SavedModel instance, the one OSS builds): GetModelMetadataImpl::GetModelMetadata is
the gRPC PredictionService.GetModelMetadata of `align-tf serve` (started by `run_server` with
model test_model over TensorFlow's half_plus_two test model). The expected SignatureDefMap is the
model's own, read from its saved_model.pb. ModelSpecOverride is not applicable
(not_applicable.py)."""

from __future__ import annotations

import os

import grpc
import pytest

UPSTREAM = "servables/tensorflow/get_model_metadata_impl_test.cc"


def upstream(case):
    return pytest.mark.upstream(UPSTREAM, case)


@pytest.fixture(scope="module")
def address(upstream_models, run_server):
    return run_server("test_model", upstream_models["half_plus_two"])[1]


def get_model_metadata(address, request):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return grpc.StatusCode.OK, prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
                request, 20)
        except grpc.RpcError as e:
            return e.code(), None


def new_request(fields=()):
    from tensorflow_serving.apis import get_model_metadata_pb2

    return get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))


@upstream("GetModelMetadataImplTest.EmptyOrInvalidMetadataFieldList")
def test_empty_or_invalid_metadata_field_list(address):
    request = new_request()
    assert get_model_metadata(address, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    request.metadata_field.append("some_stuff")
    assert get_model_metadata(address, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


@upstream("GetModelMetadataImplTest.MissingOrEmptyModelSpec")
def test_missing_or_empty_model_spec(address):
    request = new_request(["signature_def"])
    assert get_model_metadata(address, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    request.model_spec.ClearField("name")
    assert get_model_metadata(address, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    request.model_spec.name = "test"
    assert get_model_metadata(address, request)[0] == grpc.StatusCode.NOT_FOUND


@upstream("GetModelMetadataImplTest.ReturnsSignaturesForValidModel")
def test_returns_signatures_for_valid_model(address, upstream_models):
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = new_request(["signature_def"])
    request.model_spec.name = "test_model"
    request.model_spec.version.value = 123
    code, response = get_model_metadata(address, request)
    assert code == grpc.StatusCode.OK
    assert response.model_spec == request.model_spec
    assert len(response.metadata) == 1
    received = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(received)
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(upstream_models["half_plus_two"], "00000123", "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    expected = saved_model.meta_graphs[0].signature_def
    assert len(received.signature_def) == len(expected)
    assert received.signature_def["regress_x_to_y"] == expected["regress_x_to_y"]
    assert received.signature_def["serving_default"] == expected["serving_default"]
