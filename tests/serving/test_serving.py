"""End to end on 127.0.0.1: `align-tf export` and `align-tf serve` run as subprocesses with the
commands of serving/README.md, then every signature over gRPC and REST against the Keras model,
TF Serving's error codes, a new version without restart, concurrent clients, and SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from support import LABELS, REPO_ROOT, encoded_images, free_port, tiny_model, tiny_processor

from align_tf.serving.client import AlignServingClient, ServingError
from align_tf.serving.server import read_model_config_file, read_text_proto

pytestmark = pytest.mark.multiprocess

ROOT = REPO_ROOT
README = os.path.join(ROOT, "serving", "README.md")
MAX_MESSAGE = 1 << 20  # the server's gRPC / REST limit in this test, to test "oversized" cheaply
START_TIMEOUT = 240


def readme_command(prefix: str) -> list[str]:
    """The first `align-tf <prefix> ...` line of serving/README.md, as argv."""
    with open(README, encoding="utf-8") as f:
        for line in f:
            if line.startswith(f"align-tf {prefix} "):
                return shlex.split(line.split("#")[0])
    raise AssertionError(f"serving/README.md has no 'align-tf {prefix}' command")


def as_subprocess(argv: list[str]) -> list[str]:
    """`align-tf` itself when installed next to this Python, else `python -m align_tf.cli`."""
    exe = shutil.which("align-tf", path=os.path.dirname(sys.executable))
    return ([exe] if exe else [sys.executable, "-m", "align_tf.cli"]) + argv[1:]


def subprocess_env() -> dict:
    """This checkout first on the path, so the subprocess runs this code even when the package
    is not installed (in CI it is: `pip install -e .`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


def substitute(argv: list[str], values: dict[str, str]) -> list[str]:
    """Replace the value after each flag in `values` (the README's paths and ports)."""
    out = list(argv)
    for flag, value in values.items():
        assert flag in out, f"README command lacks {flag}: {argv}"
        out[out.index(flag) + 1] = value
    return out



@dataclass
class Deployment:
    process: subprocess.Popen
    base: str
    grpc_target: str
    rest_target: str
    log: str
    reference: dict

    def client(self, protocol: str, **kwargs) -> AlignServingClient:
        target = self.grpc_target if protocol == "grpc" else self.rest_target
        return AlignServingClient(target, "align", protocol=protocol, **kwargs)


def keras_reference(model, processor) -> dict:
    import tensorflow as tf

    images = encoded_images()
    pixel_values = processor.image_processor.preprocess_bytes(tf.constant(images))
    tokens = processor.tokenizer(LABELS)
    out = {k: np.asarray(v) for k, v in model({"pixel_values": pixel_values, **tokens}).items()}
    out.update(images=images, pixel_values=np.asarray(pixel_values),
               tokens={k: np.asarray(v) for k, v in tokens.items()})
    return out


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    model, processor = tiny_model(), tiny_processor()
    model_dir, base = str(root / "model"), str(root / "saved_models" / "align")
    model.save_pretrained(model_dir, processor=processor)
    reference = keras_reference(model, processor)

    export = substitute(readme_command("export"), {"--model": model_dir, "--output": base})
    done = subprocess.run(as_subprocess(export), capture_output=True, text=True, timeout=600,
                          cwd=root, env=subprocess_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert os.listdir(base) == ["1"]

    grpc_port, rest_port = free_port(), free_port()
    serve = substitute(readme_command("serve"), {"--model_base_path": base, "--port": str(grpc_port),
                                                 "--rest_api_port": str(rest_port)})
    serve += ["--file_system_poll_wait_seconds", "1",
              f"--grpc_channel_arguments=grpc.max_receive_message_length={MAX_MESSAGE}"]
    log_path = str(root / "server.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(as_subprocess(serve), stdout=log, stderr=subprocess.STDOUT, cwd=root,
                                   env=subprocess_env())
    deployment = Deployment(process, base, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}",
                            log_path, reference)
    try:
        client = deployment.client("grpc", timeout=5)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, "server exited:\n" + open(log_path).read()[-3000:]
            try:
                client.wait_until_available(timeout=2)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "server not AVAILABLE:\n" + open(log_path).read()[-3000:]
        client.close()
        yield deployment
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(params=["grpc", "rest"])
def client(request, deployment):
    with deployment.client(request.param) as client:
        yield client


def test_deployment_files_parse():
    (config,) = read_model_config_file(os.path.join(ROOT, "serving", "models.config"))
    assert (config.name, config.base_path, config.policy, config.num_versions) == ("align", "/models/align", "latest", 1)
    batching = read_text_proto(os.path.join(ROOT, "serving", "batching_parameters.txt"))
    assert batching["max_batch_size"] == {"value": 64}
    assert batching["allowed_batch_sizes"][-1] == 64  # TF Serving requires the last to equal max
    monitoring = read_text_proto(os.path.join(ROOT, "serving", "monitoring.config"))
    assert monitoring == {"prometheus_config": {"enable": True, "path": "/monitoring/prometheus/metrics"}}
    with open(os.path.join(ROOT, "serving", "docker-compose.gpu.yml")) as f:
        compose = f.read()
    assert re.search(r"image: tensorflow/serving:2\.20\.\d+-gpu", compose)
    for flag in ("--model_config_file=/config/models.config", "--batching_parameters_file=/config/batching_parameters.txt",
                 "--monitoring_config_file=/config/monitoring.config", "--per_process_gpu_memory_fraction"):
        assert flag in compose


def test_status_health_and_metadata(deployment):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with deployment.client("grpc") as grpc_client, deployment.client("rest") as rest_client:
        for c in (grpc_client, rest_client):
            (status,) = c.status()
            assert (status["version"], status["state"]) == (1, "AVAILABLE")
        with grpc.insecure_channel(deployment.grpc_target) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

        metadata = grpc_client.metadata()
        assert metadata == rest_client.metadata()
    assert set(metadata) == {"serving_default", "classify", "embed_text", "embed_image", "embed_pixels",
                             "embed_tokens", "similarity"}
    assert metadata["classify"]["inputs"] == {"image_bytes": {"dtype": "string", "shape": [-1]},
                                              "text": {"dtype": "string", "shape": [-1]}}
    assert metadata["classify"]["outputs"] == {"logits_per_image": {"dtype": "float32", "shape": [-1, -1]},
                                               "probs": {"dtype": "float32", "shape": [-1, -1]}}
    assert metadata["embed_pixels"]["inputs"]["pixel_values"] == {"dtype": "float32", "shape": [-1, 32, 32, 3]}
    assert metadata["embed_tokens"]["inputs"]["input_ids"] == {"dtype": "int32", "shape": [-1, -1]}
    assert metadata["similarity"]["outputs"]["logits_per_image"]["dtype"] == "float32"
    assert metadata["embed_text"]["method_name"] == "tensorflow/serving/predict"


def test_every_signature_equals_the_keras_model(deployment, client):
    ref = deployment.reference
    images = ref["images"]
    np.testing.assert_allclose(client.embed_text(LABELS), ref["text_embeds"], atol=1e-5)
    np.testing.assert_allclose(client.embed_image(images), ref["image_embeds"], atol=1e-5)
    np.testing.assert_allclose(client.embed_pixels(ref["pixel_values"]), ref["image_embeds"], atol=1e-5)
    tokens = ref["tokens"]
    np.testing.assert_allclose(client.embed_tokens(tokens["input_ids"], tokens["attention_mask"],
                                                   tokens["token_type_ids"]), ref["text_embeds"], atol=1e-5)
    scores = client.classify(images, LABELS)
    np.testing.assert_allclose(scores["logits_per_image"], ref["logits_per_image"], atol=1e-5)
    np.testing.assert_allclose(scores["probs"].sum(-1), 1.0, atol=1e-5)
    default = client.predict("serving_default", {"image_bytes": np.array(images, object),
                                                 "text": np.array([t.encode() for t in LABELS], object)})
    np.testing.assert_allclose(default["logits_per_image"], ref["logits_per_image"], atol=1e-5)
    logits = client.similarity(ref["image_embeds"], ref["text_embeds"])
    np.testing.assert_allclose(logits, ref["logits_per_image"], atol=1e-5)
    assert all(a.dtype == np.float32 for a in (logits, scores["probs"]))


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_rest_row_format_and_base64(deployment):
    ref = deployment.reference
    url = f"{deployment.rest_target}/v1/models/align:predict"
    status, answer = _post(url, {"signature_name": "embed_text", "instances": LABELS})
    assert status == 200
    np.testing.assert_allclose(np.array(answer["predictions"]), ref["text_embeds"], atol=1e-5)
    b64 = [{"b64": base64.b64encode(image).decode()} for image in ref["images"]]
    status, answer = _post(f"{deployment.rest_target}/v1/models/align/versions/1:predict",
                           {"signature_name": "embed_image", "instances": b64})
    assert status == 200
    np.testing.assert_allclose(np.array(answer["predictions"]), ref["image_embeds"], atol=1e-5)
    # Row format with named inputs (equal batch sizes), default signature: one object per row.
    rows = [{"image_bytes": b64[i], "text": LABELS[i]} for i in range(3)]
    status, answer = _post(url, {"instances": rows})
    assert status == 200 and set(answer["predictions"][0]) == {"logits_per_image", "probs"}
    assert np.array([row["probs"] for row in answer["predictions"]]).shape == (3, 3)
    status, answer = _post(url, {"signature_name": "embed_text"})
    assert status == 400 and "instances" in answer["error"]


def _other_client(c: AlignServingClient, d: Deployment, **kwargs) -> AlignServingClient:
    target = d.grpc_target if c.protocol == "grpc" else d.rest_target
    return AlignServingClient(target, protocol=c.protocol, retries=0, **kwargs)


ERROR_CASES = {
    "corrupt image": lambda c, d: c.embed_image([b"<html>not an image</html>"]),
    "empty batch": lambda c, d: c.embed_text([]),
    "wrong dtype": lambda c, d: c.predict("embed_text", {"text": np.array([1.0, 2.0], np.float32)}),
    # TF Serving does not check shapes against the signature (predict_util.cc): the graph does,
    # so the wrong shape is one the graph cannot run (no channel axis), not just another size.
    "wrong shape": lambda c, d: c.embed_pixels(np.zeros((1, 8, 8), np.float32)),
    "batch too large": lambda c, d: c.embed_text(["x"] * 257),
    "unknown signature": lambda c, d: c.predict("embed_audio", {"text": np.array([b"x"], object)}),
    "unknown model": lambda c, d: _other_client(c, d, model_name="no_such_model").embed_text(["x"]),
    "unknown version": lambda c, d: _other_client(c, d, model_name="align", version=7).embed_text(["x"]),
    "oversized message": lambda c, d: c.embed_image([b"\xff\xd8" + b"\x00" * (MAX_MESSAGE + 1000)]),
}
EXPECTED = {  # (gRPC code, REST HTTP status), as TF Serving answers
    "corrupt image": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    "empty batch": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    "wrong dtype": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    "wrong shape": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    "batch too large": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    "unknown signature": (grpc.StatusCode.FAILED_PRECONDITION, 400),
    "unknown model": (grpc.StatusCode.NOT_FOUND, 404),
    "unknown version": (grpc.StatusCode.NOT_FOUND, 404),
    "oversized message": (grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_request_gets_the_right_code_and_the_next_one_succeeds(deployment, client, case):
    with pytest.raises(ServingError) as info:
        ERROR_CASES[case](client, deployment)
    grpc_code, http_status = EXPECTED[case]
    if client.protocol == "grpc":
        assert info.value.code == grpc_code, info.value
    else:
        assert info.value.http_status == http_status, info.value
    assert info.value.message  # the server's own words
    if case == "empty batch":
        assert "empty batch" in info.value.message
    if case == "unknown signature" and client.protocol == "grpc":
        assert 'Serving signature key "embed_audio" not found.' == info.value.message
    np.testing.assert_allclose(client.embed_text(LABELS[:1]), deployment.reference["text_embeds"][:1], atol=1e-5)


def test_concurrent_clients(deployment):
    """8 clients (gRPC and REST) x 50 requests at once: no errors, every answer right."""
    expected = dict(zip(LABELS, deployment.reference["text_embeds"]))
    errors, answered = [], [0]
    lock = threading.Lock()

    def run(worker: int):
        protocol = "grpc" if worker % 2 == 0 else "rest"
        with deployment.client(protocol, timeout=60) as c:
            for i in range(50):
                label = LABELS[(worker + i) % len(LABELS)]
                try:
                    np.testing.assert_allclose(c.embed_text([label])[0], expected[label], atol=1e-5)
                    with lock:
                        answered[0] += 1
                except Exception as e:  # collected, the assertion below reports them
                    with lock:
                        errors.append(f"worker {worker} request {i}: {e!r}")

    with futures.ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(run, w) for w in range(8)]
        futures.wait(jobs, timeout=300)
    assert all(j.done() for j in jobs), "clients still running after 300 s"
    assert errors == [] and answered[0] == 400


def test_new_version_is_served_without_restart(deployment):
    staging = os.path.join(deployment.base, ".copying-2")
    shutil.copytree(os.path.join(deployment.base, "1"), staging)
    os.rename(staging, os.path.join(deployment.base, "2"))  # appears complete, as export does
    with deployment.client("grpc") as c:
        deadline = time.monotonic() + 120
        while not any(s["version"] == 2 and s["state"] == "AVAILABLE" for s in c.status()):
            assert time.monotonic() < deadline, open(deployment.log).read()[-3000:]
            time.sleep(0.5)
        np.testing.assert_allclose(c.embed_text(LABELS), deployment.reference["text_embeds"], atol=1e-5)
        assert c.served_version == 2
        states = {s["version"]: s["state"] for s in c.status()}
    assert states[2] == "AVAILABLE" and states[1] == "END"  # latest policy: 1 is unloaded
    with pytest.raises(ServingError) as info:
        AlignServingClient(deployment.rest_target, "align", version=1, protocol="rest").embed_text(["x"])
    assert info.value.http_status == 404
    assert deployment.process.poll() is None


def test_sigterm_stops_the_server_cleanly(deployment):
    deployment.process.send_signal(signal.SIGTERM)
    assert deployment.process.wait(timeout=60) == 0
    log = open(deployment.log).read()
    assert "Server stopped" in log and "Traceback" not in log
    assert "{name: align version: 1} (3 warm-up requests)" in log  # export's warm-up file replayed
    with pytest.raises(ServingError) as info:
        deployment.client("grpc", retries=0, timeout=5).status()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
