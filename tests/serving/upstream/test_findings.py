"""Issue 19's findings 1 to 8, one test each (not upstream cases: each fails on
the server as it was before the issue), TF Serving 2.20's source as the specification, on TF
Serving's own test models (models.py). In-process where the server's parts can be driven
directly (ModelManager, LoadedVersion, the JSON codec, the command line parser), as a
subprocess where the finding is about the process (Unix socket)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import grpc
import numpy as np
import pytest

from align_tf.errors import ServingError
from support import align_tf_command, checkout_env, free_port


def _manager(name: str, base_path: str):
    from align_tf.serving.server import ModelConfig, ModelManager

    manager = ModelManager([ModelConfig(name, base_path)])
    manager.poll()
    return manager


def test_finding_1_version_folders_are_read_as_numbers(upstream_models):
    """file_system_storage_path_source.cc ParseVersionNumber (absl::SimpleAtoi): 00000123/ is
    version 123, served from the folder it is in; the latest policy serves 124."""
    manager = _manager("m", upstream_models["saved_model_half_plus_two_2_versions"])
    version, _, outputs = manager.predict("m", None, None, "", {"x": np.array([[2.0]], np.float32)})
    assert version == 124 and outputs["y"].tolist() == [[3.0]]
    assert [v for v, _ in manager.model("m").status()] == [124]
    from align_tf.serving.server.versions import parse_version_number

    assert [parse_version_number(n) for n in ("00000123", "7", "+5", " 9 ", "1e3", "x", str(2 ** 63))] == \
        [123, 7, 5, 9, None, None, None]


def test_finding_2_inputs_are_checked_by_name_and_dtype_not_shape(upstream_models):
    """predict_util.cc checks input names and the output filter; the Session checks dtypes with
    its own words; shapes are the graph's business: TF Serving's quick-start request
    {"instances": [1.0, 2.0, 5.0]} runs on a [None, 1] signature."""
    from align_tf.serving.json_tensor import parse_json_body, parse_predict_body

    manager = _manager("k", upstream_models["keras_sequential_saved_model_save"])
    served = manager.model("k").get()
    arrays, fmt = parse_predict_body(parse_json_body(b'{"instances": [1.0, 2.0, 5.0]}'),
                                     served.input_specs["serving_default"])
    _, _, outputs = manager.predict("k", None, None, "", arrays)
    assert outputs["y"].tolist() == [1.0, 2.0, 5.0]
    with pytest.raises(ServingError) as info:
        manager.predict("k", None, None, "", {"x": np.array([[True]])})
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expects arg[0] to be float but bool is provided" in info.value.message


def test_finding_3_classify_regress_and_multi_inference_run(upstream_models):
    """classifier.cc / regressor.cc / multi_inference.cc over tf.Examples, for TF1 and TF2
    models, and TF2 predict-method signatures without a method-name error (the check is off
    unless --enable_signature_method_name_check); REST's examples JSON (json_tensor.cc) and
    results format. Before: the method-name error for TF2, UNIMPLEMENTED for real classify /
    regress signatures and MultiInference."""
    from tensorflow_serving.apis import inference_pb2, input_pb2

    from align_tf.serving.example_json import classification_json, regression_json, request_from_json
    from align_tf.serving.json_tensor import parse_json_body

    request_input = input_pb2.Input()
    request_input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
    for name in ("saved_model_half_plus_two_cpu", "saved_model_half_plus_two_tf2_cpu"):
        manager = _manager("m", upstream_models[name])
        version, result = manager.classify("m", None, None, "classify_x_to_y", request_input)
        assert version == 123 and result.scores.tolist() == [[3.0]] and result.labels is None
        assert manager.regress("m", None, None, "regress_x_to_y", request_input)[1].tolist() == [3.0]
        request = inference_pb2.MultiInferenceRequest(input=request_input)
        for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
            task = request.tasks.add(method_name=f"tensorflow/serving/{method}")
            task.model_spec.name, task.model_spec.signature_name = "m", signature
        reply = manager.multi_inference(request, None, None)
        assert reply.results[0].regression_result.regressions[0].value == 3.0
        assert reply.results[1].classification_result.classifications[0].classes[0].score == 3.0
        signature, rest_input = request_from_json(parse_json_body(
            b'{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}], "context": {"y": [1, 2]}}'))
        _, result = manager.classify("m", None, None, signature, rest_input)
        assert json.loads(classification_json(result.labels, result.scores)) == {"results": [[["", 3.0]]]}
        _, values = manager.regress("m", None, None, "regress_x_to_y", rest_input)
        assert json.loads(regression_json(values)) == {"results": [3.0]}


def test_finding_4_string_outputs_keep_every_byte_in_every_reply_format():
    """json_tensor.cc AddSingleValueAndAdvance writes string_val(i) as it is: trailing NUL bytes
    included, in row format with several outputs and for a [N] string output."""
    from align_tf.serving.json_tensor import outputs_to_json

    text = bytes(range(1, 64)) + b"\0\0\0"  # 66 bytes, 3 trailing NULs
    outputs = {"s": np.array([text, b"b\0"], object), "y": np.array([1.0, 2.0], np.float32)}
    for fmt, rows in (("row", lambda d: [r["s"] for r in d["predictions"]]),
                      ("columnar", lambda d: d["outputs"]["s"])):
        document = json.loads(outputs_to_json(outputs, fmt))
        assert [s.encode("utf-8") for s in rows(document)] == [text, b"b\0"], fmt
    single = json.loads(outputs_to_json({"s": np.array([text], object)}, "row"))
    assert single["predictions"][0].encode() == text and len(text) == 66


def test_finding_5_tf1_saved_models_load_as_tf_serving_loads_them(upstream_models):
    """TF Serving loads every SavedModel as a session bundle (TF1 loader, main op / legacy init
    op, assets): the counter (reference variables) and half_plus_three (TF 1.0 signatures with
    no shapes, legacy_init_op) load and run."""
    counter = _manager("c", upstream_models["saved_model_counter"])
    assert counter.predict("c", None, None, "incr_counter", {})[2]["output"] == 1.0
    assert counter.predict("c", None, None, "incr_counter_by", {"delta": np.array(3, np.float32)})[2]["output"] == 4.0
    three = _manager("t", upstream_models["saved_model_half_plus_three"])
    assert three.predict("t", None, None, "", {"x": np.array([[2.0]], np.float32)})[2]["y"].tolist() == [[4.0]]


def test_finding_6_rest_json_as_tf_serving_2_20_parses_it():
    """json_tensor.cc (2.20): floats converted, not refused for precision (since 2.5); any depth
    parsed (iterative since 2.18); complex64 outputs refused with TF Serving's message; zero-batch
    outputs; TF Serving's batch message; rapidjson 1.1.0's surrogates: a lone low one is its
    three UTF-8 bytes, a lone high one a parse error."""
    import tensorflow as tf

    from align_tf.serving.json_tensor import json_to_array, outputs_to_json, parse_json_body

    assert json_to_array([2 ** 24 + 1, 0.1], tf.float32, "x").tolist() == [16777216.0, np.float32(0.1)]
    deep = parse_json_body(b'{"instances": [1], "nested": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert deep["instances"] == [1]
    with pytest.raises(ServingError) as info:
        outputs_to_json({"c": np.array([1 + 0j], np.complex64)}, "row")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == "Failed to write JSON value for tensor type: complex64"
    assert json.loads(outputs_to_json({"y": np.zeros((0, 2), np.float32), "s": np.zeros((0,), object)}, "row")) \
        == {"predictions": []}
    with pytest.raises(ServingError) as info:
        outputs_to_json({"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}, "row")
    assert info.value.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"
    body = parse_json_body(b'{"inputs": ["\\udcff", "caf\\u00e9"]}')
    assert json_to_array(body["inputs"], tf.string, "x").tolist() == [b"\xed\xb3\xbf", "café".encode()]
    with pytest.raises(ServingError) as info:
        parse_json_body(b'{"inputs": ["\\ud800"]}')
    assert info.value.message == "JSON Parse error: The surrogate pair in string is invalid. at offset: 13"


MAIN_CC_FLAGS = [  # model_servers/main.cc, 2.20: every flag, with a value it takes
    "--port=8500", "--grpc_socket_path=/tmp/x.sock", "--rest_api_port=0", "--rest_api_num_threads=4",
    "--rest_api_timeout_in_ms=30000", "--rest_api_enable_cors_support=true", "--enable_batching=false",
    "--allow_version_labels_for_unavailable_models=false", "--batching_parameters_file=",
    "--enable_per_model_batching_parameters=false", "--model_config_file=", "--model_config_file_poll_wait_seconds=0",
    "--model_name=m", "--model_base_path=/m", "--num_load_threads=0", "--num_unload_threads=0",
    "--max_num_load_retries=5", "--load_retry_interval_micros=60000000", "--file_system_poll_wait_seconds=1",
    "--flush_filesystem_caches=true", "--tensorflow_session_parallelism=0", "--tensorflow_session_config_file=",
    "--tensorflow_intra_op_parallelism=0", "--tensorflow_inter_op_parallelism=0", "--use_alts_credentials=false",
    "--ssl_config_file=", "--platform_config_file=", "--per_process_gpu_memory_fraction=0", "--saved_model_tags=serve",
    "--grpc_channel_arguments=", "--grpc_max_threads=4", "--enable_model_warmup=true",
    "--num_request_iterations_for_warmup=0", "--version=false", "--monitoring_config_file=",
    "--remove_unused_fields_from_bundle_metagraph=true", "--prefer_tflite_model=false", "--num_tflite_pools=1",
    "--num_tflite_interpreters_per_pool=1", "--enable_signature_method_name_check=false",
    "--xla_cpu_compilation_enabled=false", "--xla_gpu_compilation_enabled=false", "--enable_profiler=true",
    "--thread_pool_factory_config_file=", "--mixed_precision=", "--skip_initialize_tpu=false",
    "--enable_grpc_healthcheck_service=false", "--enable_serialization_as_tensor_content=false",
]


def test_finding_7_every_tf_serving_flag_is_accepted(upstream_models, tmp_path):
    """Every flag of main.cc parses; --grpc_socket_path serves gRPC on a Unix socket and
    --enable_signature_method_name_check is honoured, in one `align-tf serve` process."""
    from align_tf.cli import build_parser

    args = build_parser().parse_args(["serve", *MAIN_CC_FLAGS])
    assert args.grpc_socket_path == "/tmp/x.sock" and args.max_num_load_retries == 5
    socket_path = str(tmp_path / "serving.sock")
    argv = align_tf_command("serve", f"--port={free_port()}", f"--grpc_socket_path={socket_path}",
                            "--enable_signature_method_name_check=true", "--model_name=default",
                            f"--model_base_path={upstream_models['saved_model_half_plus_two_cpu']}",
                            "--rest_api_enable_cors_support", "--num_load_threads=2")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].dtype = 1
    request.inputs["x"].float_val.append(2.0)
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=checkout_env(),
                                   start_new_session=True)
    try:
        result = None
        for _ in range(240):
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            with grpc.insecure_channel(f"unix:{socket_path}") as channel:
                try:
                    result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 5)
                    break
                except grpc.RpcError as e:
                    if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                        raise
            time.sleep(0.5)
        assert result is not None and list(result.outputs["y"].float_val) == [3.0]
        log_text = (tmp_path / "server.log").read_text()
        assert "--num_load_threads=2: versions load one at a time here" in log_text
    finally:
        os.killpg(process.pid, 9)
        process.wait(timeout=30)


def test_finding_8_messages_word_for_word(upstream_models, tmp_path):
    """TF Serving's texts: rapidjson's parse errors with their offset, json_tensor.cc's instance
    checks, ServerCore's servable lookups, the bad-config error of ParseProtoTextFile."""
    import tensorflow as tf

    from align_tf.errors import ServerConfigError
    from align_tf.serving.json_tensor import parse_json_body, parse_predict_body
    from align_tf.serving.server import ModelConfig, ModelManager, read_model_config_file

    def error(call):
        with pytest.raises(ServingError) as info:
            call()
        return info.value

    assert error(lambda: parse_json_body(b"instances = [1, 2]")).message == \
        "JSON Parse error: Invalid value. at offset: 0"
    specs = {"x": tf.TensorSpec(None, tf.int32)}
    assert error(lambda: parse_predict_body({"instances": [[1, 2], [3]]}, specs)).message == \
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1"
    assert error(lambda: parse_predict_body({"instances": [1, [1]]}, specs)).message == \
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [] but got: [1]"
    assert error(lambda: parse_predict_body({"instances": [1], "inputs": [1]}, specs)).message.endswith(
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")
    manager = ModelManager([ModelConfig("m", upstream_models["saved_model_half_plus_two_cpu"],
                                        version_labels={"stable": 123})])
    manager.poll()
    x = {"x": np.array([[2.0]], np.float32)}
    e = error(lambda: manager.predict("m", 99, None, "", x))
    assert (e.code, e.message) == (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(m, 99)")
    e = error(lambda: manager.predict("m", None, "x", "", x))
    assert (e.code, e.message) == (grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: x")
    bad = tmp_path / "bad_model_config.txt"
    bad.write_text("improperly formatted file")
    with pytest.raises(ServerConfigError, match="^Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1"):
        read_model_config_file(str(bad))


def test_finding_7_ssl_config_file_serves_grpc_over_tls(tmp_path):
    """server.cc BuildServerCredentials: --ssl_config_file (an SSLConfig text proto with
    server_key and server_cert) puts gRPC behind TLS; a TLS client trusting the certificate gets
    answers, a plaintext one does not."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from align_tf.serving.server import ModelManager, ServerOptions, start_grpc_server

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    config = tmp_path / "ssl.config"
    config.write_text(f"server_key: {json.dumps(key.read_text())}\nserver_cert: {json.dumps(cert.read_text())}\n"
                      "client_verify: false\n")
    credentials = ServerOptions(ssl_config_file=str(config)).grpc_credentials()
    address = f"127.0.0.1:{free_port()}"
    server, _ = start_grpc_server(ModelManager([]), address, 1 << 20, 2, credentials=credentials)
    try:
        secure = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(address, secure, options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=20)
        assert reply.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=None)
