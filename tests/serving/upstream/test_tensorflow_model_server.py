"""tensorflow/serving 2.20 tensorflow_serving/model_servers/tensorflow_model_server_test.py, ported:
one test per upstream test case (same name, snake_case prefix `test_`), each against `align-tf
serve` started by `run_server` with RunServer's command line, on TF Serving's test models
(models.py), asserting what upstream asserts.

Not applicable (not_applicable.py): testPredictOnTfLite,
testPredictWithSignatureDefOnTfLite (TF Lite platform). Upstream's private `_TestBadModel`
helpers are no test cases (no `test` prefix) and are not ported.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import grpc
import pytest

from tfs_harness import (call_rest, get_model_version, sorted_object, verify_model_spec,
                         verify_predict_request)

UPSTREAM = "model_servers/tensorflow_model_server_test.py"
RPC_TIMEOUT = 20.0
TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")


def upstream(case):
    return pytest.mark.upstream(UPSTREAM, case)


@pytest.fixture
def good_model_config_file(upstream_models, tmp_path):
    """__BuildModelConfigFile: good_model_config.txt with the two test dirs filled in."""
    with open(upstream_models["good_model_config.txt"]) as f:
        config = f.read().replace("${TEST_HALF_PLUS_TWO_DIR}", upstream_models["saved_model_half_plus_two_cpu"])
        config = config.replace("${TEST_HALF_PLUS_THREE_DIR}", upstream_models["saved_model_half_plus_three"])
    path = tmp_path / "good_model_config.conf"
    path.write_text(config)
    return str(path)


def bundle(models):
    """_GetSavedModelBundlePath."""
    return models["saved_model_half_plus_two_cpu"]


@upstream("testGetModelStatus")
def test_get_model_status(upstream_models, run_server):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    address = run_server("default", bundle(upstream_models))[1]
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    with grpc.insecure_channel(address) as channel:
        result = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == 123
    assert result.model_version_status[0].status.error_code == 0


@upstream("testGetModelMetadata")
def test_get_model_metadata(upstream_models, run_server):
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    model_path = bundle(upstream_models)
    address = run_server("default", model_path)[1]
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == get_model_version(model_path)
    assert len(result.metadata) == 1
    assert "signature_def" in result.metadata


def _test_classify(models, run_server, model_path):
    from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc

    address = run_server("default", model_path)[1]
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", get_model_version(model_path))


@upstream("testClassify")
def test_classify(upstream_models, run_server):
    _test_classify(upstream_models, run_server, bundle(upstream_models))


@upstream("testClassifyTf2")
def test_classify_tf2(upstream_models, run_server):
    _test_classify(upstream_models, run_server, upstream_models["saved_model_half_plus_two_tf2_cpu"])


def _test_regress(models, run_server, model_path):
    from tensorflow_serving.apis import prediction_service_pb2_grpc, regression_pb2

    address = run_server("default", model_path)[1]
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y", get_model_version(model_path))


@upstream("testRegress")
def test_regress(upstream_models, run_server):
    _test_regress(upstream_models, run_server, bundle(upstream_models))


@upstream("testRegressTf2")
def test_regress_tf2(upstream_models, run_server):
    _test_regress(upstream_models, run_server, upstream_models["saved_model_half_plus_two_tf2_cpu"])


def _test_multi_inference(models, run_server, model_path):
    from tensorflow_serving.apis import inference_pb2, prediction_service_pb2_grpc

    address = run_server("default", model_path)[1]
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        verify_model_spec(result.results[i].model_spec, request.tasks[i].model_spec.name,
                          request.tasks[i].model_spec.signature_name, get_model_version(model_path))


@upstream("testMultiInference")
def test_multi_inference(upstream_models, run_server):
    _test_multi_inference(upstream_models, run_server, bundle(upstream_models))


@upstream("testMultiInferenceTf2")
def test_multi_inference_tf2(upstream_models, run_server):
    _test_multi_inference(upstream_models, run_server, upstream_models["saved_model_half_plus_two_tf2_cpu"])


def _test_predict(run_server, model_path, batching_parameters_file=None, signature_name="serving_default"):
    """TensorflowModelServerTestBase._TestPredict."""
    address = run_server("default", model_path, batching_parameters_file=batching_parameters_file)[1]
    version = get_model_version(model_path)
    verify_predict_request(address, expected_output=3.0, expected_version=version,
                           signature_name=signature_name)
    verify_predict_request(address, expected_output=3.0, specify_output=False,
                           expected_version=version, signature_name=signature_name)


@upstream("testPredictSavedModel")
def test_predict_saved_model(upstream_models, run_server):
    _test_predict(run_server, bundle(upstream_models))


@upstream("testGoodModelConfig")
def test_good_model_config(upstream_models, run_server, good_model_config_file):
    address = run_server(None, None, model_config_file=good_model_config_file)[1]
    two = get_model_version(bundle(upstream_models))
    three = get_model_version(upstream_models["saved_model_half_plus_three"])
    verify_predict_request(address, model_name="half_plus_two", expected_output=3.0, expected_version=two)
    verify_predict_request(address, model_name="half_plus_two", expected_output=3.0, specify_output=False,
                           expected_version=two)
    verify_predict_request(address, model_name="half_plus_three", expected_output=4.0, expected_version=three)
    verify_predict_request(address, model_name="half_plus_three", expected_output=4.0,
                           specify_output=False, expected_version=three)


@upstream("testBadModelConfig")
def test_bad_model_config(upstream_models, run_server):
    process = run_server(None, None, model_config_file=upstream_models["bad_model_config.txt"],
                         pipe=subprocess.PIPE, wait_for_server_ready=False)[0]
    assert process.stderr is not None
    assert process.stderr.read().find(b"Error parsing text-format tensorflow.serving.ModelServerConfig") > -1


BASE_CONFIG_PROTO = """
    model_config_list: {{
      config: {{
        name: "{name}",
        base_path: "{model_path}",
        model_platform: "tensorflow"
      }}
    }}
    """


@upstream("testModelConfigReload")
def test_model_config_reload(upstream_models, run_server, tmp_path):
    config_path = tmp_path / "model_config.txt"
    config_path.write_text(BASE_CONFIG_PROTO.format(name="half_plus_two", model_path=bundle(upstream_models)))
    poll_period = 1
    address = run_server(None, None, model_config_file=str(config_path),
                         model_config_file_poll_period=poll_period)[1]
    verify_predict_request(address, model_name="half_plus_two", expected_output=3.0, specify_output=False,
                           expected_version=get_model_version(bundle(upstream_models)))
    three = upstream_models["saved_model_half_plus_three"]
    config_path.write_text(BASE_CONFIG_PROTO.format(name="half_plus_three", model_path=three))
    time.sleep(10)  # upstream: "Give modelserver time to poll and load the new config"
    verify_predict_request(address, model_name="half_plus_three", expected_output=4.0, specify_output=False,
                           expected_version=get_model_version(three))


@upstream("testModelConfigReloadWithZeroPollPeriod")
def test_model_config_reload_with_zero_poll_period(upstream_models, run_server, tmp_path):
    config_path = tmp_path / "model_config.txt"
    config_path.write_text(BASE_CONFIG_PROTO.format(name="half_plus_two", model_path=bundle(upstream_models)))
    poll_period = 0
    address = run_server(None, None, model_config_file=str(config_path),
                         model_config_file_poll_period=poll_period)[1]
    verify_predict_request(address, model_name="half_plus_two", expected_output=3.0, specify_output=False,
                           expected_version=get_model_version(bundle(upstream_models)))
    three = upstream_models["saved_model_half_plus_three"]
    config_path.write_text(BASE_CONFIG_PROTO.format(name="half_plus_three", model_path=three))
    time.sleep(poll_period + 1)
    verify_predict_request(address, model_name="half_plus_two", expected_output=3.0, specify_output=False,
                           expected_version=get_model_version(three))


@upstream("testGoodGrpcChannelArgs")
def test_good_grpc_channel_args(upstream_models, run_server):
    address = run_server("default", bundle(upstream_models),
                         grpc_channel_arguments="grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb")[1]
    verify_predict_request(address, expected_output=3.0, specify_output=False,
                           expected_version=get_model_version(upstream_models["saved_model_half_plus_three"]))


@upstream("testClassifyREST")
def test_classify_rest(upstream_models, run_server):
    rest = run_server("default", bundle(upstream_models))[2]
    resp = call_rest(f"http://{rest}/v1/models/default:classify",
                     {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert json.loads(resp.decode()) == {"results": [[["", 3.0]]]}


@upstream("testRegressREST")
def test_regress_rest(upstream_models, run_server):
    rest = run_server("default", bundle(upstream_models))[2]
    resp = call_rest(f"http://{rest}/v1/models/default:regress",
                     {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert json.loads(resp.decode()) == {"results": [3.0]}


@upstream("testPredictREST")
def test_predict_rest(upstream_models, run_server):
    rest = run_server("default", bundle(upstream_models))[2]
    resp = call_rest(f"http://{rest}/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
    assert json.loads(resp.decode()) == {"predictions": [3.0, 3.5, 4.0]}


@upstream("testPredictColumnarREST")
def test_predict_columnar_rest(upstream_models, run_server):
    rest = run_server("default", bundle(upstream_models))[2]
    resp = call_rest(f"http://{rest}/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})
    assert json.loads(resp.decode()) == {"outputs": [3.0, 3.5, 4.0]}


@upstream("testGetStatusREST")
def test_get_status_rest(upstream_models, run_server):
    rest = run_server("default", bundle(upstream_models))[2]
    resp = call_rest(f"http://{rest}/v1/models/default", None)
    assert json.loads(resp.decode()) == {"model_version_status": [{
        "version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


@upstream("testGetModelMetadataREST")
def test_get_model_metadata_rest(upstream_models, run_server):
    rest = run_server("default", bundle(upstream_models))[2]
    resp = call_rest(f"http://{rest}/v1/models/default/metadata", None)
    with open(os.path.join(TESTDATA, "half_plus_two_model_metadata.json")) as f:
        expected = json.load(f)
    assert sorted_object(json.loads(resp.decode())) == sorted_object(expected)


@upstream("testPrometheusEndpoint")
def test_prometheus_endpoint(upstream_models, run_server):
    rest = run_server("default", bundle(upstream_models),
                      monitoring_config_file=upstream_models["monitoring_config.txt"])[2]
    resp = call_rest(f"http://{rest}/monitoring/prometheus/metrics", None)
    assert "# TYPE" in resp.decode("utf-8")


@upstream("testPredictUDS")
def test_predict_uds(upstream_models, run_server):
    run_server("default", bundle(upstream_models))
    verify_predict_request(f"unix:{run_server.socket_path}", expected_output=3.0, specify_output=False,
                           expected_version=get_model_version(upstream_models["saved_model_half_plus_three"]))


@upstream("test_tf_saved_model_save")
def test_tf_saved_model_save(upstream_models, run_server):
    base_path = upstream_models["tf_saved_model_save"]
    address = run_server("default", base_path)[1]
    verify_predict_request(address, expected_output=12.0, specify_output=False,
                           expected_version=get_model_version(base_path))


@upstream("test_tf_saved_model_save_multiple_signatures")
def test_tf_saved_model_save_multiple_signatures(upstream_models, run_server):
    base_path = upstream_models["tf_saved_model_save_multiple_signatures"]
    address = run_server("default", base_path)[1]
    version = get_model_version(base_path)
    verify_predict_request(address, expected_output=2.0, expected_version=version,
                           signature_name="custom_signature_key")
    verify_predict_request(address, expected_output=1.0, expected_version=version)


@upstream("test_sequential_keras_saved_model_save")
def test_sequential_keras_saved_model_save(upstream_models, run_server):
    base_path = upstream_models["keras_sequential_saved_model_save"]
    address = run_server("default", base_path)[1]
    verify_predict_request(address, batch_input=True, specify_output=False, expected_output=2.0,
                           expected_version=get_model_version(base_path))


@upstream("test_distrat_sequential_keras_saved_model_save")
def test_distrat_sequential_keras_saved_model_save(upstream_models, run_server):
    base_path = upstream_models["keras_distrat_sequential_saved_model_save"]
    address = run_server("default", base_path)[1]
    verify_predict_request(address, batch_input=True, specify_output=False, expected_output=2.0,
                           expected_version=get_model_version(base_path))


@upstream("test_profiler_service_with_valid_trace_request")
def test_profiler_service_with_valid_trace_request(upstream_models, run_server, tmp_path):
    """Upstream sends a REST predict each second for 3 seconds while profiler_client.trace asks
    the gRPC port for a 1 s trace, and asserts that no exception escapes."""
    import threading

    from tensorflow.python.profiler import profiler_client

    _, grpc_address, rest_address = run_server("default", bundle(upstream_models))

    def requests():
        for _ in range(3):
            call_rest(f"http://{rest_address}/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
            time.sleep(1)

    sender = threading.Thread(target=requests)
    sender.start()
    logdir = tmp_path / "logs"
    logdir.mkdir()
    try:
        profiler_client.trace(grpc_address, str(logdir), 1000, "", 10)
    finally:
        sender.join()


@upstream("test_tf_text")
def test_tf_text(upstream_models, run_server):
    model_path = upstream_models["tf_text_regression"]
    address = run_server("default", model_path)[1]
    verify_predict_request(address, expected_output=3.0, expected_version=get_model_version(model_path),
                           rpc_timeout=600)


def test_generated_models_match_upstream_layout(upstream_models):
    """models.py writes the testdata layout upstream's tests read: zero-padded version folders,
    assets, TF1 exports with reference variables (not an upstream case)."""
    two = upstream_models["saved_model_half_plus_two_2_versions"]
    assert sorted(os.listdir(two)) == ["00000123", "00000124"]
    assert os.listdir(upstream_models["tf_text_regression"]) == ["01"]
    for name in ("saved_model_half_plus_two_cpu", "saved_model_half_plus_three"):
        assert open(os.path.join(upstream_models[name], "00000123", "assets", "foo.txt")).read() \
            == "asset-file-contents"
