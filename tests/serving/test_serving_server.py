"""The local server's model management in-process, on tiny hand-made SavedModels (fast): version
policies, labels, a broken version, config reloads, the REST JSON formats and Prometheus counts."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf

from support import free_port

from align_tf.serving.client import AlignServingClient, ServingError
from align_tf.serving.server import (ModelConfig, ModelManager, outputs_to_json, parse_predict_body,
                                     read_model_config_file, start_grpc_server, start_rest_server)


def save_scaler(path: str, factor: float) -> str:
    """A SavedModel whose `serving_default` maps x -> {"y": x * factor, "name_bytes": "v<factor>"}."""
    module = tf.Module()
    module.scale = tf.Variable(factor)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(x):
        return {"y": x * module.scale,
                "name_bytes": tf.fill(tf.shape(x), tf.strings.format("v{}", module.scale))}

    module.serve = serve
    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    return path



@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for version, factor in ((1, 1.0), (2, 2.0), (3, 3.0)):
        save_scaler(str(root / "scaler" / str(version)), factor)
    (root / "scaler" / "4").mkdir()  # a broken version: saved_model.pb that is not one
    (root / "scaler" / "4" / "saved_model.pb").write_bytes(b"not a protobuf")
    (root / "scaler" / "notes").mkdir()  # not numeric: ignored, as TF Serving does
    return root


def predict(manager, name, version=None, label=None, x=(1.0, 2.0)):
    return manager.predict(name, version, label, "", {"x": np.array(x, np.float32)})


def test_config_file_policies_labels_and_a_broken_version(model_root, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(f"""
    model_config_list {{
      config {{ name: "latest" base_path: "{model_root / 'scaler'}" model_platform: "tensorflow" }}
      config {{
        name: "pinned" base_path: "{model_root / 'scaler'}" model_platform: "tensorflow"
        model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
        version_labels {{ key: "stable" value: 1 }}
        version_labels {{ key: "canary" value: 2 }}
      }}
    }}""")
    manager = ModelManager(read_model_config_file(str(config)))
    manager.poll()
    # latest: version 4 is the newest but broken, so nothing is served under "latest"...
    status = dict(manager.model("latest").status())
    assert status[4].state == "END" and status[4].error_code == grpc.StatusCode.UNKNOWN
    with pytest.raises(ServingError) as info:
        predict(manager, "latest")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    # ...and it is not retried on every poll while unchanged.
    manager.poll()
    assert dict(manager.model("latest").status())[4].state == "END"

    version, _, out = predict(manager, "pinned")  # newest of the specific versions
    assert version == 2 and out["y"].tolist() == [2.0, 4.0]
    assert predict(manager, "pinned", label="stable")[0] == 1
    assert predict(manager, "pinned", version=1)[2]["y"].tolist() == [1.0, 2.0]
    with pytest.raises(ServingError) as info:
        predict(manager, "pinned", version=3)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "Specific(pinned, 3)" in info.value.message
    with pytest.raises(ServingError) as info:
        predict(manager, "pinned", label="nightly")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_request_checks_name_the_problem(model_root):
    manager = ModelManager([ModelConfig("m", str(model_root / "scaler"), policy="specific", versions=(1,))],
                           max_batch_size=4)
    manager.poll()
    # TF Serving's words (predict_util.cc, saved_model::GetInputValues, the Session's own dtype
    # check); the declared shape is not checked: the graph decides (x * scale takes [2, 2]).
    cases = {
        "input size does not match signature": {"x": np.array([1.0], np.float32), "z": np.array([1.0], np.float32)},
        r"Signature input alias: x\(feed name: serving_default_x:0\) not found in request": {"z": np.array([1.0], np.float32)},
        r"Expects arg\[0\] to be float but string is provided": {"x": np.array([b"1"], object)},
        r"Expects arg\[0\] to be float but int32 is provided": {"x": np.array([1], np.int32)},
        "larger than maximum input batch size 4": {"x": np.ones(5, np.float32)},
    }
    for message, inputs in cases.items():
        with pytest.raises(ServingError, match=message) as info:
            manager.predict("m", None, None, "serving_default", inputs)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    _, _, out = manager.predict("m", None, None, "", {"x": np.ones((2, 2), np.float32)})
    assert out["y"].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    with pytest.raises(ServingError, match="output tensor alias not found"):
        manager.predict("m", None, None, "", {"x": np.ones(1, np.float32)}, output_filter=("z",))
    _, _, out = manager.predict("m", None, None, "", {"x": np.ones(1, np.float32)}, output_filter=("y",))
    assert list(out) == ["y"]


def test_rest_json_formats():
    specs = {"x": tf.TensorSpec([None], tf.float32), "s": tf.TensorSpec([None], tf.string)}
    arrays, fmt = parse_predict_body({"instances": [{"x": 1, "s": {"b64": "aGk="}}, {"x": 2.5, "s": "yo"}]}, specs)
    assert fmt == "row" and arrays["x"].tolist() == [1.0, 2.5] and arrays["s"].tolist() == [b"hi", b"yo"]
    arrays, fmt = parse_predict_body({"inputs": {"x": [3], "s": ["a"]}}, specs)
    assert fmt == "columnar" and arrays["x"].dtype == np.float32
    for bad in ({"instances": [1], "inputs": {}}, {"signature_name": "x"}, {"inputs": {"x": ["a"], "s": ["a"]}},
                {"inputs": {"x": [1], "s": [1]}}, {"inputs": {"x": [[1], [1, 2]], "s": ["a"]}}):
        with pytest.raises(ServingError) as info:
            parse_predict_body(bad, specs)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, bad
    outputs = {"y": np.array([1.5, 2.0], np.float32), "name_bytes": np.array([b"\x00a", b"b"], object)}
    assert json.loads(outputs_to_json(outputs, "row")) == {"predictions": [{"y": 1.5, "name_bytes": {"b64": "AGE="}},
                                                               {"y": 2.0, "name_bytes": {"b64": "Yg=="}}]}
    assert json.loads(outputs_to_json({"y": outputs["y"]}, "columnar")) == {"outputs": [1.5, 2.0]}


def test_servers_reload_config_and_report_metrics(model_root, tmp_path):
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    manager = ModelManager([ModelConfig("a", str(model_root / "scaler"), policy="specific", versions=(1,))])
    manager.poll()
    grpc_port, rest_port = free_port(), free_port()
    grpc_server, _ = start_grpc_server(manager, f"127.0.0.1:{grpc_port}", 1 << 20, 4)
    rest_server = start_rest_server(manager, "127.0.0.1", rest_port, 1 << 20, 4, "/metrics")
    try:
        client = AlignServingClient(f"127.0.0.1:{grpc_port}", "a")
        assert client.predict("serving_default", {"x": np.array([1.0], np.float32)})["y"].tolist() == [1.0]
        # HandleReloadConfigRequest: model "a" now follows "latest" among 1-3 (4 is broken).
        request = model_management_pb2.ReloadConfigRequest()
        config = request.config.model_config_list.config.add(name="a", base_path=str(model_root / "scaler"),
                                                              model_platform="tensorflow")
        config.model_version_policy.specific.versions.extend([3])
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            answer = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=30)
        assert answer.status.error_code == 0
        assert client.predict("serving_default", {"x": np.array([1.0], np.float32)})["y"].tolist() == [3.0]
        assert client.served_version == 3
        rest = AlignServingClient(f"http://127.0.0.1:{rest_port}", "a", protocol="rest")
        out = rest.predict("serving_default", {"x": np.array([2.0], np.float32)})
        assert out["y"].tolist() == [6.0] and out["name_bytes"].tolist() == [b"v3"]
        assert [s["version"] for s in rest.status()] == [3]
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert ':tensorflow:serving:request_count{model_name="a",signature_name="serving_default",status="OK"} 3' in metrics
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v2/nothing", timeout=10)
        assert info.value.code == 404
        client.close()
    finally:
        rest_server.shutdown()
        rest_server.server_close()
        grpc_server.stop(grace=None)


def test_server_options_name_what_is_wrong(tmp_path):
    """`align-tf serve` settings that cannot be served raise ServerConfigError (one line from the
    CLI) naming the flag, not a traceback."""
    from align_tf.errors import ServerConfigError
    from align_tf.serving.limits import RequestLimits
    from align_tf.serving.server import ServerOptions

    with pytest.raises(ServerConfigError, match="give --model_base_path"):
        ServerOptions().model_configs()
    with pytest.raises(ServerConfigError, match="--model_config_file .*nope: No such file"):
        ServerOptions(model_config_file=str(tmp_path / "nope")).model_configs()
    with pytest.raises(ServerConfigError, match="--batching_parameters_file .*nope: No such file"):
        ServerOptions(enable_batching=True, batching_parameters_file=str(tmp_path / "nope")).limits()
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { name: 1 2 3")
    with pytest.raises(ServerConfigError, match="Error parsing text-format tensorflow.serving.ModelServerConfig"):
        ServerOptions(model_config_file=str(bad)).model_configs()
    options = ServerOptions(grpc_channel_arguments="grpc.max_receive_message_length=4096,x=y",
                            max_batch_size=8)
    assert options.limits() == RequestLimits(max_message_bytes=4096, max_decoded_bytes=4096, max_batch_size=8)
