"""Hostile and malformed requests against `align-tf serve`, run as a subprocess on 127.0.0.1 over
a small probe SavedModel with ALIGN's input names and dtypes (tests/support.py), with a 1 MiB
message limit, batches of at most 64 and a 2 s REST timeout.

One test per finding of issue 14 (1, 3-7, 9; 2 is in test_conformance.py), each stating what
TF Serving answers and where its source says so, then a seeded fuzz run over gRPC tensors and
REST bodies. The rule throughout: every request gets a gRPC status or an HTTP status with a JSON
body, nothing is allocated past the limits (the server's peak resident memory stays within
MEMORY_BOUND of its warm peak), and a good request right after still answers."""

from __future__ import annotations

import http.client
import json
import random
import socket
import subprocess
import time
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import tensorflow as tf

from support import (align_tf_command, checkout_env, free_port, peak_memory_bytes, save_probe_model,
                     stop_process)

from align_tf.serving.client import AlignServingClient

pytestmark = pytest.mark.multiprocess

MAX_MESSAGE = 1 << 20
MAX_BATCH = 64
REST_TIMEOUT_S = 2.0
# What the server may grow by, past its peak after warm-up, over this whole file: a few copies
# of the largest request it accepts (1 MiB) and Python's own churn, far below any of the
# allocations the hostile requests declare (256 MiB to 64 GiB).
MEMORY_BOUND = 200 * 1024 * 1024
DT_FLOAT, DT_INT32, DT_STRING = 1, 3, 7


@dataclass
class Server:
    process: subprocess.Popen
    grpc_target: str
    rest_port: int
    warm_peak: int
    log: str

    def grown(self) -> int:
        return peak_memory_bytes(self.process.pid) - self.warm_peak


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    for version, factor in ((1, 1.0), (2, 2.0)):
        save_probe_model(str(root / "probe" / str(version)), factor)
    config = root / "models.config"
    config.write_text(f"""model_config_list {{ config {{
        name: "probe" base_path: "{root / 'probe'}" model_platform: "tensorflow"
        model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
        version_labels {{ key: "stable" value: 1 }}
        version_labels {{ key: "pre release" value: 2 }} }} }}""")
    grpc_port, rest_port = free_port(), free_port()
    argv = align_tf_command(
        "serve", "--model_config_file", str(config), "--port", str(grpc_port),
        "--rest_api_port", str(rest_port), "--file_system_poll_wait_seconds", "0",
        f"--grpc_channel_arguments=grpc.max_receive_message_length={MAX_MESSAGE}",
        "--max_batch_size", str(MAX_BATCH), "--rest_api_timeout_in_ms", str(int(REST_TIMEOUT_S * 1000)))
    log_path = str(root / "server.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=checkout_env())
    try:
        with AlignServingClient(f"127.0.0.1:{grpc_port}", "probe", timeout=5) as client:
            deadline = time.monotonic() + 240
            while True:
                assert process.poll() is None, open(log_path).read()[-3000:]
                try:
                    client.wait_until_available(timeout=2)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, open(log_path).read()[-3000:]
        s = Server(process, f"127.0.0.1:{grpc_port}", rest_port, 0, log_path)
        for _ in range(5):
            assert_alive(s)
        s.warm_peak = peak_memory_bytes(process.pid)
        yield s
    finally:
        stop_process(process)


# -- clients --------------------------------------------------------------------------------
def predict_request(signature: str = "embed_text", **spec):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", "probe")
    request.model_spec.signature_name = signature
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


def tensor(request, alias: str, dtype: int, shape, **values):
    proto = request.inputs[alias]
    proto.dtype = dtype
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    for field, items in values.items():
        if field == "tensor_content":
            proto.tensor_content = items
        else:
            getattr(proto, field).extend(items)
    return proto


def grpc_call(server: Server, method: str, request, timeout: float = 30):
    """(code, details, response) of one call with the raw TF Serving stubs."""
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = (model_service_pb2_grpc.ModelServiceStub if method == "GetModelStatus"
                else prediction_service_pb2_grpc.PredictionServiceStub)(channel)
        try:
            return grpc.StatusCode.OK, "", getattr(stub, method)(request, timeout=timeout)
        except grpc.RpcError as e:
            return e.code(), e.details(), None


def http_call(server: Server, method: str, path: str, body: bytes = b"", headers=None,
              timeout: float = 30) -> tuple[int, dict | None, bytes]:
    """(status, JSON body or None, raw body) of one request on its own connection."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        headers = {"Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders(body)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    return response.status, payload, raw


def post_json(server: Server, path: str, body) -> tuple[int, dict | None, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http_call(server, "POST", path, data, {"Content-Type": "application/json"})


def assert_alive(server: Server) -> None:
    """A good request over each protocol still answers, with the probe's numbers."""
    request = predict_request()
    tensor(request, "text", DT_STRING, [2], string_val=[b"abc", b"hello"])
    code, details, response = grpc_call(server, "Predict", request)
    assert code == grpc.StatusCode.OK, details
    assert tf.make_ndarray(response.outputs["text_embeds"]).tolist() == [[3.0, 2.0], [5.0, 2.0]]
    status, answer, _ = post_json(server, "/v1/models/probe:predict", {"instances": ["abcd"]})
    assert status == 200 and answer["predictions"][0]["text_embeds"] == [4.0, 2.0], answer
    assert server.process.poll() is None


def assert_rest_error(status_body, status: int, words: str) -> None:
    code, payload, raw = status_body
    assert code == status, (code, raw[:300])
    assert isinstance(payload, dict) and words in payload["error"], raw[:300]


# -- one test per finding ---------------------------------------------------------------------
def test_1_declared_size_is_checked_before_allocation(server):
    """A 43-byte request declaring 2**31 strings and carrying none. TensorFlow's FromProto would
    pad it to the declared size (tensor.cc); TF Serving then parses it as "tensor parsing error"
    or runs out of memory. Here: INVALID_ARGUMENT from the header, nothing allocated."""
    request = predict_request()
    tensor(request, "text", DT_STRING, [2 ** 31])
    assert len(request.SerializeToString()) <= 43
    code, details, _ = grpc_call(server, "Predict", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "2147483648" in details  # the batch bound speaks first (then the decoded-size one)
    assert server.grown() < MEMORY_BOUND
    assert_alive(server)


@pytest.mark.parametrize("value", [2 ** 40, 4294967297, 101.0, True, "7", None, [1]])
def test_3_rest_integer_inputs_take_only_integers_in_range(server, value):
    """json_tensor.cc, AddValueToTensor: DT_INT32 takes `val.IsInt()` only, so 2**40,
    4294967297, 101.0 and true are 400 "JSON Value: ... is not of expected type: int32"
    (and a list one level too deep is "Encountered list at unexpected level")."""
    body = {"signature_name": "embed_tokens",
            "inputs": {"input_ids": [[1, value]], "attention_mask": [[1, 1]], "token_type_ids": [[0, 0]]}}
    code, payload, raw = post_json(server, "/v1/models/probe:predict", body)
    assert code == 400, raw[:300]
    words = "Encountered list at unexpected level" if isinstance(value, list) else "is not of expected type: int32"
    assert words in payload["error"], payload
    body["inputs"]["input_ids"] = [[1, 41]]
    code, payload, _ = post_json(server, "/v1/models/probe:predict", body)
    assert code == 200 and payload["outputs"] == [[42.0, 2.0]]  # version 2: factor 2


ROUTES = [  # (method, path, body, TF Serving's status, words of its message)
    # http_rest_api_handler.cc: a path under /v1/ that the regexes do not take is
    # InvalidArgument("Malformed request: <method> <path>") -> 400 (http_server.cc).
    ("GET", "/v1/models/probe:predict", b"", 400, "Malformed request: GET /v1/models/probe:predict"),
    ("POST", "/v1/models/probe", b"{}", 400, "Malformed request: POST /v1/models/probe"),
    ("GET", "/v1/models/probe/versions/abc", b"", 400, "Malformed request: GET"),
    ("GET", "/v1/models/probe/", b"", 400, "Malformed request: GET /v1/models/probe/"),
    ("PUT", "/v1/models/probe:predict", b"{}", 400, "Malformed request: PUT"),
    ("DELETE", "/v1/models/probe", b"", 400, "Malformed request: DELETE"),
    # http_rest_api_util.cc, ParseModelInfo: SimpleAtoi fails past int64.
    ("POST", "/v1/models/probe/versions/9223372036854775808:predict", b"{}", 400,
     "Failed to convert version: 9223372036854775808 to numeric."),
    ("GET", "/v1/models/probe/versions/" + "9" * 5000, b"", 400, "Failed to convert version"),
    # json_tensor.cc FillClassifyRegressRequestFromJson, then classifier.cc's signature checks
    # (the method-name check is off by default: the probe's predict signature is looked at).
    ("POST", "/v1/models/probe:regress", b'{"instances": []}', 400, "'examples' is expected and was not found"),
    ("POST", "/v1/models/probe:classify", b'{"examples": [{"x": 1}]}', 400,
     'No classification inputs found in SignatureDef: inputs {\n  key: "text"'),
    # ParseJson: rapidjson refuses these; Python's parser recursed or raised on them.
    ("POST", "/v1/models/probe:predict", b"[" * 100_000, 400, "JSON Parse error"),
    ("POST", "/v1/models/probe:predict", b'{"instances": ["\\ud800"]}', 400, "surrogate pair in string is invalid"),
    ("POST", "/v1/models/probe:predict", b"", 400, "The document is empty"),
    # Not under /v1/: not the handler's (http_server.cc), 404.
    ("GET", "/v2/models/probe", b"", 404, "Not found"),
]


@pytest.mark.parametrize("method,path,body,status,words", ROUTES, ids=[f"{r[0]} {r[1][:50]}" for r in ROUTES])
def test_4_malformed_requests_answer_400_with_a_json_error(server, method, path, body, status, words):
    assert_rest_error(http_call(server, method, path, body), status, words)


def test_4_unknown_http_method_answers_json(server):
    """A method http.server has no handler for: an answer in JSON, not an HTML page."""
    code, payload, raw = http_call(server, "BREW", "/v1/models/probe")
    assert code in (400, 501) and isinstance(payload, dict) and payload["error"], raw[:200]
    assert_alive(server)


def test_5_missing_model_spec_and_duplicate_output_filter(server):
    """predict_impl.cc / get_model_status_impl.cc / get_model_metadata_impl.cc: no model_spec is
    INVALID_ARGUMENT "Missing ModelSpec"; predict_util.cc: a repeated output_filter alias is
    INVALID_ARGUMENT "duplicate output tensor alias: <alias>"."""
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

    for method, request in (("Predict", predict_pb2.PredictRequest()),
                            ("GetModelStatus", get_model_status_pb2.GetModelStatusRequest()),
                            ("GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest(
                                metadata_field=["signature_def"]))):
        code, details, _ = grpc_call(server, method, request)
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"), method
    request = predict_request()
    tensor(request, "text", DT_STRING, [1], string_val=[b"x"])
    request.output_filter.extend(["text_embeds", "text_embeds"])
    code, details, _ = grpc_call(server, "Predict", request)
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias: text_embeds")


def test_6_status_ignores_labels_and_labels_are_url_decoded(server):
    """get_model_status_impl.cc reads the name and the version only: with a label (and no
    version) every version is listed. http_rest_api_util.cc, DecodeArg: names and labels in
    the URL are URL-decoded, so "pre%20release" is the label "pre release"."""
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name, request.model_spec.version_label = "probe", "stable"
    code, details, response = grpc_call(server, "GetModelStatus", request)
    assert code == grpc.StatusCode.OK, details
    assert sorted(s.version for s in response.model_version_status) == [1, 2]
    code, payload, _ = http_call(server, "GET", "/v1/models/probe/labels/stable")
    assert code == 200 and sorted(s["version"] for s in payload["model_version_status"]) == ["1", "2"]
    code, payload, _ = http_call(server, "GET", "/v1/models/probe/labels/pre%20release/metadata")
    assert code == 200 and payload["model_spec"]["version"] == "2", payload
    code, payload, _ = post_json(server, "/v1/models/probe/labels/pre%20release:predict", {"instances": ["ab"]})
    assert code == 200 and payload["predictions"][0]["text_embeds"] == [2.0, 2.0]


def test_7_hostile_sizes_are_refused_before_allocation(server):
    """Each of these declares far more than it carries; TF Serving would allocate the declared
    size (FromProto pads typed values) before any check. Here INVALID_ARGUMENT, and memory
    stays flat."""
    # 64 strings declared, one of ~1 MiB sent: 64 MiB once padded (the case had 256
    # with a 64 MiB limit; here batches stop at 64 and messages at 1 MiB).
    request = predict_request()
    tensor(request, "text", DT_STRING, [MAX_BATCH], string_val=[b"x" * (MAX_MESSAGE - 4096)])
    code, details, _ = grpc_call(server, "Predict", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "once decoded" in details, details
    # 100000 images with one value: the batch bound speaks first, before any allocation.
    request = predict_request("embed_pixels")
    tensor(request, "pixel_values", DT_FLOAT, [100_000, 4, 4, 3], float_val=[0.5])
    code, details, _ = grpc_call(server, "Predict", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 100000 is larger than maximum input batch size 64" in details
    # Within the batch bound but 256 MiB of int32 tokens declared.
    request = predict_request("embed_tokens")
    for alias in ("input_ids", "attention_mask", "token_type_ids"):
        tensor(request, alias, DT_INT32, [64, 2 ** 20], int_val=[1])
    code, details, _ = grpc_call(server, "Predict", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "once decoded" in details, details
    # A negative dimension is not a batch of one (TensorShape::IsValid).
    request = predict_request()
    tensor(request, "text", DT_STRING, [-1], string_val=[b"x"])
    code, details, _ = grpc_call(server, "Predict", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "negative dimension" in details
    # tensor_content that does not hold the declared shape (Tensor::FromProto fails).
    request = predict_request("embed_pixels")
    tensor(request, "pixel_values", DT_FLOAT, [1, 4, 4, 3], tensor_content=b"\0" * 12)
    code, details, _ = grpc_call(server, "Predict", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensor parsing error: pixel_values" in details
    assert server.grown() < MEMORY_BOUND
    assert_alive(server)


@pytest.mark.parametrize("case", ["Content-Length: -1", "Content-Length: abc", "signature_name list",
                                  "text nested 70 deep", "JSON nested 100000 deep in inputs", "1e400"])
def test_7_hostile_rest_bodies_answer_400(server, case):
    path = "/v1/models/probe:predict"
    if case.startswith("Content-Length"):
        result = http_call(server, "POST", path, b'{"instances": ["a"]}',
                           {"Content-Length": case.split(": ")[1]})
        return assert_rest_error(result, 400, "Content-Length")
    body = {"signature_name list": b'{"signature_name": ["embed_text"], "instances": ["a"]}',
            # json_tensor.cc FillSignature: "'signature_name' key must be a string value."
            "text nested 70 deep": b'{"inputs": {"text": ' + b"[" * 70 + b'"a"' + b"]" * 70 + b"}}",
            "JSON nested 100000 deep in inputs": b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            # rapidjson: "Number too big to be stored in double" (kParseErrorNumberTooBig).
            "1e400": b'{"signature_name": "embed_pixels", "inputs": ' + json.dumps(
                [[[[1.0, 1.0, 1.0]] * 4] * 4]).replace("1.0", "1e400", 1).encode() + b"}"}[case]
    words = {"signature_name list": "'signature_name' key must be a string value",
             "text nested 70 deep": "nested more than 32 deep",
             # Parsed (rapidjson parses any depth since TF Serving 2.18), then refused as a tensor
             # of more dimensions than this server holds.
             "JSON nested 100000 deep in inputs": "tensor parsing error: text",
             "1e400": "Number too big"}[case]
    assert_rest_error(post_json(server, path, body), 400, words)
    assert_alive(server)


def _raw_http(server: Server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_7_chunked_bodies_are_read_and_bounded(server):
    """A chunked body (which curl and evhttp speak) is read; its chunks count against the same
    body limit as a Content-Length, answered 413 past it."""
    head = b"POST /v1/models/probe:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b'{"instances": ["abcde"]}'
    answer = _raw_http(server, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert answer.startswith(b"HTTP/1.1 200") and b"[5.0,2.0]" in answer, answer[:300]
    # The limit's worth of chunks, then one more chunk header: refused there, with nothing
    # left unread (unread bytes would make the close a reset).
    chunk = b"x" * 65536
    answer = _raw_http(server, head + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * (MAX_MESSAGE // len(chunk))
                       + b"%x\r\n" % len(chunk))
    assert answer.startswith(b"HTTP/1.1 413") and b'"error"' in answer, answer[:300]
    assert_alive(server)


def test_7_nan_and_infinity_are_written_as_tf_serving_writes_them(server):
    """TF Serving parses with kParseNanAndInfFlag (json_tensor.cc ParseJson) and writes
    non-finite floats as NaN / Infinity / -Infinity (WriteDecimal): the same here. These are
    not strict JSON; Python's json and rapidjson read them (docs/serving.md says so)."""
    pixels = np.zeros((3, 4, 4, 3))
    pixels[0, 0, 0, 0], pixels[1], pixels[2] = np.nan, np.inf, -np.inf
    body = json.dumps({"signature_name": "embed_pixels", "inputs": pixels.tolist()})  # NaN, Infinity
    code, payload, raw = post_json(server, "/v1/models/probe:predict", body.encode())
    assert code == 200, raw[:300]
    assert raw.count(b"NaN") == 1 and b"-Infinity" in raw and b"Infinity" in raw
    means = [row[0] for row in payload["outputs"]]
    assert np.isnan(means[0]) and means[1] == np.inf and means[2] == -np.inf


def test_7_a_slow_client_is_answered_408_and_disconnected(server):
    """A client that sends headers and then nothing gets 408 after --rest_api_timeout_in_ms and
    its connection closed; meanwhile other requests are served."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as slow:
        slow.sendall(b"POST /v1/models/probe:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        assert_alive(server)
        answer = b""
        while chunk := slow.recv(4096):
            answer += chunk
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert REST_TIMEOUT_S - 0.5 < waited < REST_TIMEOUT_S + 20


def test_9_floats_written_short_and_extra_columnar_keys_ignored(server):
    """WriteDecimal (json_tensor.cc) writes a float with "%g" when that reads back as the same
    float32, else with 9 digits; FillTensorMapFromInputsMap looks up only the signature's
    inputs, so an extra key in "inputs" is ignored."""
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1, 1, (8, 4, 4, 3)).astype(np.float32)
    body = {"signature_name": "embed_pixels", "inputs": {"pixel_values": pixels.tolist(), "extra": [1]}}
    code, payload, raw = post_json(server, "/v1/models/probe:predict", body)
    assert code == 200, raw[:300]
    request = predict_request("embed_pixels")
    tensor(request, "pixel_values", DT_FLOAT, pixels.shape, float_val=pixels.ravel().tolist())
    _, _, response = grpc_call(server, "Predict", request)
    exact = tf.make_ndarray(response.outputs["image_embeds"])
    np.testing.assert_array_equal(np.array(payload["outputs"], np.float32), exact)
    numbers = raw.decode().replace("[", " ").replace("]", " ").replace(",", " ").split()[2:]
    assert all(len(n.lstrip("-").replace(".", "").split("e")[0].lstrip("0")) <= 9 for n in numbers), numbers
    assert len(raw) < len(json.dumps({"outputs": exact.tolist()}))  # 17-digit doubles were longer


# -- the fuzz run -----------------------------------------------------------------------------
GRPC_CASES = 1500
REST_CASES = 1500
SEED = 20261128


def _random_grpc_request(rng: random.Random):
    """A PredictRequest for one of the signatures, then one to three mutations of any field."""
    signature, aliases, dtype = rng.choice([("embed_text", ["text"], DT_STRING),
                                            ("embed_pixels", ["pixel_values"], DT_FLOAT),
                                            ("embed_tokens", ["input_ids", "attention_mask", "token_type_ids"],
                                             DT_INT32)])
    request = predict_request(signature)
    for alias in aliases:
        shape = [rng.randint(1, 3)] + ([4, 4, 3] if dtype == DT_FLOAT else [rng.randint(1, 5)] if dtype == DT_INT32 else [])
        n = int(np.prod(shape))
        field = {"string_val": [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 20))) for _ in range(n)]} \
            if dtype == DT_STRING else {"float_val": [rng.uniform(-1, 1) for _ in range(n)]} \
            if dtype == DT_FLOAT else {"int_val": [rng.randint(0, 100) for _ in range(n)]}
        tensor(request, alias, dtype, shape, **field)
    sizes = [-(2 ** 62), -1, 0, 1, 2, 3, 7, 64, 65, 1000, 2 ** 20, 2 ** 31, 2 ** 62]
    for _ in range(rng.randint(1, 3)):
        proto = request.inputs[rng.choice(sorted(request.inputs))]
        mutation = rng.randrange(12)
        if mutation == 0:
            proto.dtype = rng.randrange(0, 30)
        elif mutation == 1:
            proto.tensor_shape.dim.add(size=rng.choice(sizes))
        elif mutation == 2 and proto.tensor_shape.dim:
            proto.tensor_shape.dim[rng.randrange(len(proto.tensor_shape.dim))].size = rng.choice(sizes)
        elif mutation == 3:
            del proto.tensor_shape.dim[:]
        elif mutation == 4:
            proto.tensor_shape.unknown_rank = True
        elif mutation == 5:
            proto.tensor_content = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 3, 4, 48, 192, 5000])))
        elif mutation == 6:
            proto.string_val.extend([b"y" * rng.choice([0, 1, 1000, 200_000])] * rng.randint(1, 4))
        elif mutation == 7:
            proto.float_val.extend([rng.choice([float("nan"), float("inf"), 1e38, -0.0])] * rng.randint(1, 50))
        elif mutation == 8:
            proto.int_val.extend([rng.choice([-(2 ** 31), 2 ** 31 - 1, 0])] * rng.randint(1, 50))
        elif mutation == 9:
            request.inputs[rng.choice(["text", "x", "", "input_ids", "é"])].CopyFrom(proto)
        elif mutation == 10:
            request.output_filter.append(rng.choice(["text_embeds", "image_embeds", "nope", ""]))
        else:
            spec = request.model_spec
            choice = rng.randrange(4)
            if choice == 0:
                spec.name = rng.choice(["", "probe", "nope", "x" * 300])
            elif choice == 1:
                spec.version.value = rng.choice([0, 1, 2, 3, -1, 2 ** 63 - 1])
            elif choice == 2:
                spec.version_label = rng.choice(["stable", "pre release", "", "nope"])
            else:
                spec.signature_name = rng.choice(["", "embed_text", "embed_tokens", "nope", "__saved_model_init_op"])
    return request


def _random_rest_request(rng: random.Random) -> tuple[str, str, bytes]:
    """(method, path, body): a valid body or path, mutated by bytes or by structure."""
    signature, inputs = rng.choice([
        ("embed_text", {"text": ["a photo", "b"]}),
        ("embed_pixels", {"pixel_values": np.full((1, 4, 4, 3), 0.5).tolist()}),
        ("embed_tokens", {"input_ids": [[1, 2]], "attention_mask": [[1, 1]], "token_type_ids": [[0, 0]]})])
    document = {"signature_name": signature, "inputs": inputs}
    path = rng.choice(["/v1/models/probe:predict", "/v1/models/probe/versions/1:predict",
                       "/v1/models/probe/labels/stable:predict", "/v1/models/probe:classify",
                       "/v1/models/probe", "/v1/models/probe/metadata", "/v1/models/nope:predict",
                       "/v1/models/probe/versions/" + "9" * rng.randint(1, 40) + ":predict", "/v1/"])
    method = rng.choice(["POST"] * 6 + ["GET", "PUT", "HEAD"])
    kind = rng.randrange(6)
    values = [None, True, -1, 2 ** 64, 1.5, 1e308, "x", {}, [], {"b64": "!!"}, {"b64": "YQ=="}, [[["deep"]]]]
    if kind == 0:  # structural: a random value somewhere
        alias = rng.choice(list(inputs))
        if rng.random() < 0.5:
            document["inputs"][alias] = rng.choice(values)
        else:
            column = json.loads(json.dumps(inputs[alias]))
            column[0] = rng.choice(values)
            document["inputs"][alias] = column
    elif kind == 1:
        document = rng.choice([{"instances": list(inputs.values())[0]},
                               {"instances": [dict(zip(inputs, row)) for row in zip(*inputs.values())]},
                               {"instances": []}, {"inputs": {}}, [], "x", {"signature_name": 7}])
    elif kind == 2:
        document["signature_name"] = rng.choice(["", "nope", "embed_text", None, 1, ["embed_text"]])
    body = json.dumps(document).encode()
    if kind == 3:  # bytes: flips, cuts and insertions
        data = bytearray(body)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data)) if data else 0
            op = rng.randrange(3)
            if op == 0 and data:
                data[at] = rng.getrandbits(8)
            elif op == 1:
                del data[at:at + rng.randint(1, 10)]
            else:
                data[at:at] = rng.choice([b"[", b"{", b'"', b"\\u", b"\\ud800", b"\xff", b"1e999", b",", b"]"]) * rng.randint(1, 200)
        body = bytes(data)
    elif kind == 4:  # nesting
        depth = rng.choice([10, 33, 40, 1000, 50_000])
        body = body.replace(b'"inputs": ', b'"inputs": ' + b"[" * depth, 1) + b"]" * rng.choice([0, depth])
    return method, path, body


def test_seeded_fuzz_every_request_gets_an_answer(server, capsys):
    """GRPC_CASES mutated PredictRequests and REST_CASES mutated REST requests (seed SEED). A
    gRPC answer is OK or a status the server chose (UNKNOWN "Exception calling application"
    would be a crash in a handler, UNAVAILABLE a dead server, DEADLINE_EXCEEDED a hang); a
    REST answer is a status with a JSON object body (500 would be a bug caught at the last
    line). Then a good request still answers and memory has stayed within MEMORY_BOUND."""
    rng = random.Random(SEED)
    grpc_totals = {"cases": 0, "ok": 0, "clear errors": 0, "crashes": 0, "hangs": 0}
    failures = []
    for i in range(GRPC_CASES):
        request = _random_grpc_request(rng)
        code, details, _ = grpc_call(server, "Predict", request, timeout=60)
        grpc_totals["cases"] += 1
        if code == grpc.StatusCode.OK:
            grpc_totals["ok"] += 1
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            grpc_totals["hangs"] += 1
            failures.append(f"gRPC case {i}: hang")
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) \
                or not details:
            grpc_totals["crashes"] += 1
            failures.append(f"gRPC case {i}: {code} {details}")
        else:
            grpc_totals["clear errors"] += 1
    rest_totals = {"cases": 0, "ok": 0, "clear errors": 0, "crashes": 0, "hangs": 0}
    for i in range(REST_CASES):
        method, path, body = _random_rest_request(rng)
        rest_totals["cases"] += 1
        try:
            status, payload, raw = http_call(server, method, path, body, timeout=60)
        except TimeoutError:
            rest_totals["hangs"] += 1
            failures.append(f"REST case {i}: hang ({method} {path})")
            continue
        except (ConnectionError, http.client.HTTPException) as e:
            rest_totals["crashes"] += 1
            failures.append(f"REST case {i}: no answer ({e!r}) to {method} {path} {body[:80]!r}")
            continue
        if method == "HEAD" and status < 500:
            rest_totals["ok" if status == 200 else "clear errors"] += 1
        elif status == 200 and isinstance(payload, dict):
            rest_totals["ok"] += 1
        elif 400 <= status < 500 and isinstance(payload, dict) and payload.get("error"):
            rest_totals["clear errors"] += 1
        else:
            rest_totals["crashes"] += 1
            failures.append(f"REST case {i}: {status} {raw[:200]!r} for {method} {path} {body[:80]!r}")
    grown = server.grown()
    with capsys.disabled():
        print(f"\nfuzz seed {SEED}: gRPC {grpc_totals}; REST {rest_totals}; server peak "
              f"{peak_memory_bytes(server.process.pid) / 2 ** 20:.0f} MiB "
              f"(+{grown / 2 ** 20:.0f} MiB over its warm peak)")
    assert failures == []
    assert grown < MEMORY_BOUND
    assert_alive(server)
    assert "Traceback" not in open(server.log).read()
