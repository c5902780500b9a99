"""tensorflow/serving 2.20 tensorflow_serving/model_servers/get_model_status_impl_test.cc, ported:
GetModelStatusImpl::GetModelStatus is the gRPC ModelService.GetModelStatus of `align-tf serve`
(started by `run_server` with upstream's server core: saved_model_half_plus_two_2_versions,
specific versions 123 and 124). ModelSpecOverride is not applicable (not_applicable.py)."""

from __future__ import annotations

import grpc
import pytest

UPSTREAM = "model_servers/get_model_status_impl_test.cc"
MODEL = "saved_model_half_plus_two_2_versions"


def upstream(case):
    return pytest.mark.upstream(UPSTREAM, case)


@pytest.fixture(scope="module")
def address(upstream_models, run_server, tmp_path_factory):
    config = tmp_path_factory.mktemp("status") / "models.config"
    config.write_text(f"""model_config_list {{ config {{
        name: "{MODEL}" base_path: "{upstream_models['saved_model_half_plus_two_2_versions']}"
        model_platform: "tensorflow"
        model_version_policy {{ specific {{ versions: 123 versions: 124 }} }} }} }}""")
    return run_server(None, None, model_config_file=str(config))[1]


def get_model_status(address, request):
    """(status code, response or None)."""
    from tensorflow_serving.apis import model_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return grpc.StatusCode.OK, model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, 20)
        except grpc.RpcError as e:
            return e.code(), None


def request(**spec):
    from tensorflow_serving.apis import get_model_status_pb2

    message = get_model_status_pb2.GetModelStatusRequest()
    if "name" in spec:
        message.model_spec.name = spec["name"]
    if "version" in spec:
        message.model_spec.version.value = spec["version"]
    return message


@upstream("GetModelStatusImplTest.MissingOrEmptyModelSpecFailure")
def test_missing_or_empty_model_spec_failure(address):
    assert get_model_status(address, request())[0] == grpc.StatusCode.INVALID_ARGUMENT


@upstream("GetModelStatusImplTest.InvalidModelNameFailure")
def test_invalid_model_name_failure(address):
    code, response = get_model_status(address, request(name="nonexistent_model"))
    assert code == grpc.StatusCode.NOT_FOUND and response is None  # no model_version_status


@upstream("GetModelStatusImplTest.InvalidModelVersionFailure")
def test_invalid_model_version_failure(address):
    code, response = get_model_status(address, request(name=MODEL, version=125))
    assert code == grpc.StatusCode.NOT_FOUND and response is None


@upstream("GetModelStatusImplTest.AllVersionsSuccess")
def test_all_versions_success(address):
    code, response = get_model_status(address, request(name=MODEL))
    assert code == grpc.StatusCode.OK
    assert len(response.model_version_status) == 2
    assert {s.version for s in response.model_version_status} == {123, 124}
    for status in response.model_version_status:
        assert status.status.error_code == 0 and status.status.error_message == ""


@upstream("GetModelStatusImplTest.SingleVersionSuccess")
def test_single_version_success(address):
    code, response = get_model_status(address, request(name=MODEL, version=123))
    assert code == grpc.StatusCode.OK
    assert len(response.model_version_status) == 1
    assert response.model_version_status[0].version == 123
    assert response.model_version_status[0].status.error_code == 0
    assert response.model_version_status[0].status.error_message == ""
