"""Conformance: `align-tf serve` driven by clients nobody here wrote, with a tiny ALIGN export.

- OpenVINO's `ovmsclient` over gRPC and HTTP, in its own process (ovmsclient_driver.py), with
  neither TensorFlow nor this package imported there;
- raw `tensorflow_serving.apis` stubs written the way TF Serving's example clients are
  (tensorflow_serving/example/mnist_client.py reads `outputs['scores'].float_val`;
  resnet_client_grpc.py builds `inputs['image_bytes']` with `make_tensor_proto`);
- plain HTTP as TF Serving's REST API documentation shows it (row and columnar formats, `b64`,
  versions and labels, status and metadata).

Each case says what TF Serving answers and where its source says so."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from support import (LABELS, align_tf_command, checkout_env, encoded_images, free_port,
                     save_probe_model, stop_process)

pytestmark = pytest.mark.multiprocess

DRIVER = __file__.replace("test_conformance.py", "ovmsclient_driver.py")


@dataclass
class Served:
    grpc_target: str
    rest: str
    reference: dict
    image_files: list


@pytest.fixture(scope="module")
def served(tiny, tmp_path_factory):
    import tensorflow as tf

    from align_tf.export import export_saved_model

    root = tmp_path_factory.mktemp("conformance")
    model, processor = tiny["model"], tiny["processor"]
    base = str(root / "align")
    export_saved_model(model, processor, base, 1)
    images = encoded_images()[:2]  # JPEG and PNG (ovmsclient's numpy bytes drop a BMP's trailing zeros)
    pixel_values = processor.image_processor.preprocess_bytes(tf.constant(images))
    tokens = processor.tokenizer(LABELS)
    reference = {k: np.asarray(v) for k, v in model({"pixel_values": pixel_values, **tokens}).items()}
    reference.update(images=images, pixel_values=np.asarray(pixel_values),
                     tokens={k: np.asarray(v) for k, v in tokens.items()})
    files = []
    for i, data in enumerate(images):
        files.append(str(root / f"image{i}"))
        with open(files[-1], "wb") as f:
            f.write(data)
    config = root / "models.config"
    config.write_text(f"""model_config_list {{ config {{ name: "align" base_path: "{base}"
        model_platform: "tensorflow" version_labels {{ key: "stable" value: 1 }} }} }}""")
    grpc_port, rest_port = free_port(), free_port()
    log_path = str(root / "server.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            align_tf_command("serve", "--model_config_file", str(config), "--port", str(grpc_port),
                             "--rest_api_port", str(rest_port), "--file_system_poll_wait_seconds", "0"),
            stdout=log, stderr=subprocess.STDOUT, env=checkout_env())
    try:
        deadline = time.monotonic() + 240
        while not _available(f"http://127.0.0.1:{rest_port}"):
            assert process.poll() is None and time.monotonic() < deadline, open(log_path).read()[-3000:]
            time.sleep(0.5)
        yield Served(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}", reference, files)
    finally:
        stop_process(process)


def _available(rest: str) -> bool:
    try:
        status, answer = http(rest, "/v1/models/align")
    except OSError:
        return False
    return status == 200 and answer["model_version_status"][0]["state"] == "AVAILABLE"


def http(rest: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """A plain HTTP call as the REST documentation shows it (curl -d '{...}')."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(rest + path, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# -- raw stubs, as TF Serving's example clients ---------------------------------------------------
def _stub_predict(target: str, signature: str, inputs: dict):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "align"
        request.model_spec.signature_name = signature
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return stub.Predict(request, 10.0)  # 10 secs timeout, as resnet_client_grpc.py


def _float_val(result, alias: str) -> np.ndarray:
    """mnist_client.py: numpy.array(result.outputs['scores'].float_val), shaped by the proto."""
    proto = result.outputs[alias]
    assert proto.tensor_content == b""  # typed fields, as TF Serving writes by default
    return np.array(proto.float_val).reshape([d.size for d in proto.tensor_shape.dim])


def test_raw_stubs_read_float_val_on_every_signature(served):
    """predict_util.cc PostProcessPredictionResult: TF Serving fills outputs with
    Tensor::AsProtoField (float_val ...) unless --enable_serialization_as_tensor_content."""
    ref, target = served.reference, served.grpc_target
    tokens = ref["tokens"]
    cases = {
        "embed_text": ({"text": LABELS}, "text_embeds", ref["text_embeds"]),
        "embed_image": ({"image_bytes": ref["images"]}, "image_embeds", ref["image_embeds"]),
        "embed_pixels": ({"pixel_values": ref["pixel_values"]}, "image_embeds", ref["image_embeds"]),
        "embed_tokens": (tokens, "text_embeds", ref["text_embeds"]),
        "similarity": ({"image_embeds": ref["image_embeds"], "text_embeds": ref["text_embeds"]},
                       "logits_per_image", ref["logits_per_image"]),
        "classify": ({"image_bytes": ref["images"], "text": LABELS}, "logits_per_image", ref["logits_per_image"]),
        "serving_default": ({"image_bytes": ref["images"], "text": LABELS}, "probs", None),
    }
    for signature, (inputs, alias, expected) in cases.items():
        result = _stub_predict(target, signature, inputs)
        values = _float_val(result, alias)
        if expected is None:
            np.testing.assert_allclose(values.sum(-1), 1.0, atol=1e-5)
        else:
            np.testing.assert_allclose(values, expected, atol=1e-5, err_msg=signature)
        assert result.model_spec.name == "align" and result.model_spec.version.value == 1
        assert result.model_spec.signature_name == signature


def test_raw_stubs_status_and_metadata(served):
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                         prediction_service_pb2_grpc)

    with grpc.insecure_channel(served.grpc_target) as channel:
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "align"}), 10.0)
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "align"
        metadata = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, 10.0)
    (version,) = status.model_version_status
    assert (version.version, version.status.error_code) == (1, 0)
    assert version.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signature_map)
    assert {"serving_default", "classify", "embed_text", "embed_image", "embed_pixels", "embed_tokens",
            "similarity"} <= set(signature_map.signature_def)
    assert signature_map.signature_def["embed_text"].method_name == "tensorflow/serving/predict"


def test_tensor_content_only_with_the_flag(tmp_path):
    """--enable_serialization_as_tensor_content switches outputs to tensor_content
    (Tensor::AsProtoTensorContent); both decode (tf.make_ndarray) to the same numbers."""
    import tensorflow as tf

    from align_tf.serving.server import ModelConfig, ModelManager, start_grpc_server

    save_probe_model(str(tmp_path / "probe" / "1"), 3.0)
    manager = ModelManager([ModelConfig("probe", str(tmp_path / "probe"))])
    manager.poll()
    answers = {}
    for flag in (False, True):
        port = free_port()
        server, _ = start_grpc_server(manager, f"127.0.0.1:{port}", 1 << 20, 2, tensor_content=flag)
        try:
            result = _stub_predict_probe(f"127.0.0.1:{port}")
        finally:
            server.stop(grace=None)
        proto = result.outputs["text_embeds"]
        assert bool(proto.tensor_content) == flag and bool(proto.float_val) == (not flag)
        answers[flag] = tf.make_ndarray(proto)
        assert list(tf.make_ndarray(result.outputs["echo_bytes"])) == [b"ab", b"\xff\x00c"]
    np.testing.assert_array_equal(answers[False], [[2.0, 3.0], [3.0, 3.0]])
    np.testing.assert_array_equal(answers[True], answers[False])


def _stub_predict_probe(target: str):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "probe"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto([b"ab", b"\xff\x00c"]))
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 10.0)


# -- ovmsclient -----------------------------------------------------------------------------------
def _ovmsclient(served: Served, protocol: str) -> dict:
    target = served.grpc_target if protocol == "grpc" else served.rest.split("://")[1]
    done = subprocess.run([sys.executable, DRIVER, protocol, target, "align", "1", *served.image_files, "--", *LABELS],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ovmsclient_status_metadata_predict(served, protocol):
    out = _ovmsclient(served, protocol)
    assert out["imported"] == []  # a third-party process: no TensorFlow, none of our code
    ref = served.reference
    assert out["status"] == {"1": {"state": "AVAILABLE", "error_code": 0, "error_message": ""}}
    np.testing.assert_allclose(out["predict"]["logits_per_image"], ref["logits_per_image"], atol=1e-5)
    np.testing.assert_allclose(np.sum(out["predict"]["probs"], -1), 1.0, atol=1e-5)
    # ovmsclient maps NOT_FOUND (gRPC) / 404 (HTTP) to ModelNotFoundError.
    assert out["unknown model"]["type"] == "ModelNotFoundError", out["unknown model"]
    # Its default version 0 is, for TF Serving, the version numbered 0 (server_core.cc
    # ServableRequestFromModelSpec; get_model_status_impl.cc: "Could not find version 0 of model").
    assert out["default version"]["type"] == "ModelNotFoundError"
    assert "Could not find version 0 of model align" in out["default version"]["message"]
    if protocol == "grpc":
        assert out["metadata"]["model_version"] == 1
        assert out["metadata"]["inputs"] == {"image_bytes": {"shape": [-1], "dtype": "DT_STRING"},
                                             "text": {"shape": [-1], "dtype": "DT_STRING"}}
        assert out["metadata"]["outputs"]["probs"] == {"shape": [-1, -1], "dtype": "DT_FLOAT"}
    else:
        # ovmsclient parses OpenVINO Model Server's camelCase metadata ("modelSpec"); given TF
        # Serving's snake_case (http_rest_api_util.cc ToJsonString preserves proto field names)
        # it hands back the JSON as it came, which is what real TF Serving gets too.
        metadata = out["metadata"]
        assert metadata["model_spec"] == {"name": "align", "signature_name": "", "version": "1"}
        signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["inputs"]["text"]["dtype"] == "DT_STRING"


# -- REST as TF Serving's REST API documentation shows it ---------------------------------------
def test_rest_status_and_metadata_as_documented(served):
    """The documented status answer (versions as strings, error_code "OK"); a label in the path
    is ignored for status (get_model_status_impl.cc); metadata is {"model_spec", "metadata":
    {"signature_def": {"signature_def": ...}}} (http_rest_api_util.cc ToJsonString)."""
    documented = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                            "status": {"error_code": "OK", "error_message": ""}}]}
    for path in ("/v1/models/align", "/v1/models/align/versions/1", "/v1/models/align/labels/stable"):
        assert http(served.rest, path) == (200, documented), path
    status, answer = http(served.rest, "/v1/models/align/metadata")
    assert status == 200 and answer["model_spec"] == {"name": "align", "signature_name": "", "version": "1"}
    signature = answer["metadata"]["signature_def"]["signature_def"]["embed_text"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["text"]["dtype"] == "DT_STRING"
    assert http(served.rest, "/v1/models/nope")[0] == 404


def test_rest_row_columnar_b64_versions_and_labels(served):
    ref, rest = served.reference, served.rest
    b64 = [{"b64": base64.b64encode(image).decode()} for image in ref["images"]]
    # Row format, one unnamed input per instance.
    status, answer = http(rest, "/v1/models/align:predict", {"signature_name": "embed_text", "instances": LABELS})
    assert status == 200
    np.testing.assert_allclose(answer["predictions"], ref["text_embeds"], atol=1e-5)
    # Columnar, with the version and with the label in the path.
    for path in ("/v1/models/align/versions/1:predict", "/v1/models/align/labels/stable:predict"):
        status, answer = http(rest, path, {"signature_name": "embed_image", "inputs": {"image_bytes": b64}})
        assert status == 200
        np.testing.assert_allclose(answer["outputs"], ref["image_embeds"], atol=1e-5)
    # Row format with named inputs (the default signature), one object per instance back.
    rows = [{"image_bytes": b64[i], "text": LABELS[i]} for i in range(2)]
    status, answer = http(rest, "/v1/models/align:predict", {"instances": rows})
    assert status == 200 and set(answer["predictions"][0]) == {"logits_per_image", "probs"}
    np.testing.assert_allclose([row["logits_per_image"] for row in answer["predictions"]],
                               ref["logits_per_image"][:, :2], atol=1e-5)
    # Numbers: int32 tokens and float32 pixels, columnar with several outputs named.
    status, answer = http(rest, "/v1/models/align:predict", {
        "signature_name": "embed_tokens", "inputs": {k: v.tolist() for k, v in ref["tokens"].items()}})
    assert status == 200
    np.testing.assert_allclose(answer["outputs"], ref["text_embeds"], atol=1e-5)
    status, answer = http(rest, "/v1/models/align:predict", {
        "signature_name": "classify", "inputs": {"image_bytes": b64, "text": LABELS}})
    assert status == 200 and set(answer["outputs"]) == {"logits_per_image", "probs"}
    np.testing.assert_allclose(answer["outputs"]["logits_per_image"], ref["logits_per_image"], atol=1e-5)
    # Errors are {"error": "..."} with TF Serving's HTTP mapping (http_server.cc).
    status, answer = http(rest, "/v1/models/align/versions/9:predict", {"instances": LABELS})
    assert status == 404 and "Servable not found" in answer["error"]
