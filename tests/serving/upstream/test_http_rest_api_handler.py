"""tensorflow/serving 2.20 tensorflow_serving/model_servers/http_rest_api_handler_test.cc, ported:
HttpRestApiHandler::ProcessRequest is a REST request to `align-tf serve` (started by
`run_server` with upstream's server core: model saved_model_half_plus_two_2_versions over
TensorFlow's half_plus_two test model, version 123, label Version_Label -> 123). The status is
read from the HTTP status (TF Serving's ToHTTPStatusCode), the message from the JSON "error"."""

from __future__ import annotations

import http.client
import json
import os

import pytest

UPSTREAM = "model_servers/http_rest_api_handler_test.cc"
MODEL = "saved_model_half_plus_two_2_versions"
TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
INVALID_ARGUMENT, NOT_FOUND = 400, 404


def upstream(case):
    return pytest.mark.upstream(UPSTREAM, case)


@pytest.fixture(scope="module")
def rest(upstream_models, run_server, tmp_path_factory):
    """The REST address of a server with HttpRestApiHandlerTest's ServerCore."""
    config = tmp_path_factory.mktemp("handler") / "models.config"
    config.write_text(f"""model_config_list {{ config {{
        name: "{MODEL}" base_path: "{upstream_models['half_plus_two']}" model_platform: "tensorflow"
        model_version_policy {{ specific {{ versions: 123 }} }}
        version_labels {{ key: "Version_Label" value: 123 }} }} }}""")
    return run_server(None, None, model_config_file=str(config))[2]


def process_request(rest: str, method: str, path: str, body: str = ""):
    """(HTTP status, headers, output)."""
    host, port = rest.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(method, path, body=body.encode() if body else None)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode("utf-8", "surrogateescape")
    finally:
        connection.close()


def error_message(output: str) -> str:
    """GetJsonErrorMsg."""
    doc = json.loads(output)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str), output
    return doc["error"]


def expect_error(rest, method, path, body, status, words):
    code, _, output = process_request(rest, method, path, body)
    assert code == status, (method, path, code, output)
    assert words in error_message(output), (method, path, output)


def expect_ok(rest, method, path, body, expected_json):
    code, headers, output = process_request(rest, method, path, body)
    assert code == 200, output
    assert json.loads(output) == (json.loads(expected_json) if isinstance(expected_json, str) else expected_json)
    assert headers.get("Content-Type") == "application/json"
    assert not any(h.startswith("Access-Control") for h in headers)  # AddHeaders: Content-Type only


@upstream("HttpRestApiHandlerTest.kPathRegex")
def test_k_path_regex(rest):
    """kPathRegex "(?i)/v1/.*": the handler takes /v1/models (400, its own answer); the server
    has nothing at /statuspage or /index (404)."""
    assert process_request(rest, "GET", "/v1/models")[0] == INVALID_ARGUMENT
    assert process_request(rest, "GET", "/statuspage")[0] == NOT_FOUND
    assert process_request(rest, "GET", "/index")[0] == NOT_FOUND


@upstream("HttpRestApiHandlerTest.UnsupportedApiCalls")
def test_unsupported_api_calls(rest):
    expect_error(rest, "GET", "/v1/foo", "", INVALID_ARGUMENT, "Malformed request")
    expect_error(rest, "POST", "/v1/foo", "", INVALID_ARGUMENT, "Malformed request")
    expect_error(rest, "GET", "/v1/models", "", INVALID_ARGUMENT, "Missing model name")
    expect_error(rest, "GET", "/v1/models/debug/model_name", "", INVALID_ARGUMENT, "Malformed request")
    expect_error(rest, "POST", "/v1/models", "", INVALID_ARGUMENT, "Malformed request")
    expect_error(rest, "GET", "/v1/models/foo:predict", "", INVALID_ARGUMENT, "Malformed request")
    expect_error(rest, "GET", "/v1/models/foo/version/50:predict", "", INVALID_ARGUMENT, "Malformed request")
    expect_error(rest, "POST", "/v1/models/foo/version/50:regress", "", INVALID_ARGUMENT, "Malformed request")
    expect_error(rest, "POST", "/v1/models/foo/versions/HELLO:regress", "", INVALID_ARGUMENT, "Malformed request")
    expect_error(rest, "POST", f"/v1/models/foo/versions/{2 ** 64 - 1}:regress", "", INVALID_ARGUMENT,
                 "Failed to convert version")
    expect_error(rest, "POST", "/v1/models/foo/metadata", "", INVALID_ARGUMENT, "Malformed request")
    expect_error(rest, "POST", "/v1/models/foo/label/some_label:regress", "", INVALID_ARGUMENT, "Malformed request")
    expect_error(rest, "POST", "/v1/models/foo/versions/50/labels/some_label:regress", "", INVALID_ARGUMENT,
                 "Malformed request")
    expect_error(rest, "POST", "/v1/models/foo/versions/some_label:regress", "", INVALID_ARGUMENT,
                 "Malformed request")


@upstream("HttpRestApiHandlerTest.PredictModelNameVersionErrors")
def test_predict_model_name_version_errors(rest):
    assert process_request(rest, "POST", "/v1/models/foo:predict", '{ "instances": [1] }')[0] == NOT_FOUND
    assert process_request(rest, "POST", "/v1/models/foo/versions/50:predict", '{ "instances": [1] }')[0] == NOT_FOUND
    # Valid model name, but invalid version number (99) -- upstream's path reads ".../<name>99:predict".
    assert process_request(rest, "POST", f"/v1/models/{MODEL}99:predict", '{ "instances": [1] }')[0] == NOT_FOUND


@upstream("HttpRestApiHandlerTest.PredictRequestErrors")
def test_predict_request_errors(rest):
    path = f"/v1/models/{MODEL}:predict"
    expect_error(rest, "POST", path, "", INVALID_ARGUMENT, "JSON Parse error: The document is empty")
    expect_error(rest, "POST", path, "instances = [1, 2]", INVALID_ARGUMENT, "JSON Parse error: Invalid value")
    expect_error(rest, "POST", path, '{ "instances": ["x", "y"] }', INVALID_ARGUMENT, "not of expected type: float")
    expect_error(rest, "POST", f"/v1/models/{MODEL}/labels/Version_Nonexistent:predict",
                 '{ "instances": ["x", "y"] }', INVALID_ARGUMENT, "Unrecognized servable version label")
    expect_error(rest, "POST", path, '{ "signature_name": 100 }', INVALID_ARGUMENT,
                 "'signature_name' key must be a string value.")


@upstream("HttpRestApiHandlerTest.Predict")
def test_predict(rest):
    expect_ok(rest, "POST", f"/v1/models/{MODEL}:predict", '{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
              '{ "predictions": [[2.5, 3.0], [3.5, 4.0]] }')
    expect_ok(rest, "POST", f"/v1/models/{MODEL}/versions/123:predict", '{"instances": [1.0, 2.0]}',
              '{ "predictions": [2.5, 3.0] }')
    expect_ok(rest, "POST", f"/v1/models/{MODEL}/labels/Version_Label:predict", '{"instances": [1.0, 2.0]}',
              '{ "predictions": [2.5, 3.0] }')
    expect_ok(rest, "POST", f"/v1/models/{MODEL}/versions/123:predict",
              '{"signature_name": "serving_default", "instances": [3.0, 4.0]}', '{ "predictions": [3.5, 4.0] }')
    expect_ok(rest, "POST", f"/v1/models/{MODEL}/versions/123:predict",
              '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}', '{ "outputs": [3.5, 4.0] }')


@upstream("HttpRestApiHandlerTest.Regress")
def test_regress(rest):
    body = '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }'
    for path in (f"/v1/models/{MODEL}:regress", f"/v1/models/{MODEL}/versions/123:regress",
                 f"/v1/models/{MODEL}/labels/Version_Label:regress"):
        expect_ok(rest, "POST", path, body, '{ "results": [42] }')


@upstream("HttpRestApiHandlerTest.Classify")
def test_classify(rest):
    expect_ok(rest, "POST", f"/v1/models/{MODEL}:classify",
              '{"signature_name": "classify_x_to_y", "examples": [ { "x": 20.0 } ] }', '{ "results": [[["", 12]]] }')
    expect_ok(rest, "POST", f"/v1/models/{MODEL}/labels/Version_Label:classify",
              '{"signature_name": "classify_x_to_y", "examples": [ { "x": 10.0 } ] }', '{ "results": [[["", 7]]] }')


@upstream("HttpRestApiHandlerTest.GetStatus")
def test_get_status(rest):
    expected = {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    for path in (f"/v1/models/{MODEL}", f"/v1/models/{MODEL}/versions/123", f"/v1/models/{MODEL}/labels/Version_Label"):
        expect_ok(rest, "GET", path, "", expected)


@upstream("HttpRestApiHandlerTest.GetModelMetadata")
def test_get_model_metadata(rest):
    with open(os.path.join(TESTDATA, "saved_model_half_plus_two_2_versions_metadata.json")) as f:
        expected = json.load(f)
    expect_ok(rest, "GET", f"/v1/models/{MODEL}/metadata", "", expected)
