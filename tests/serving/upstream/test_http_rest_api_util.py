"""tensorflow/serving 2.20 tensorflow_serving/model_servers/http_rest_api_util_test.cc, ported:
ParseModelInfo is `parse_model_info` of the REST server (align_tf/serving/server/rest.py), the
function every REST request goes through; `None` is parse_successful == false."""

from __future__ import annotations

import grpc
import pytest

from align_tf.errors import ServingError
from align_tf.serving.server.rest import parse_model_info

UPSTREAM = "model_servers/http_rest_api_util_test.cc"
RESERVED = "%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"
DECODED = "!#$%&'()*+,/:;=?@[]"


@pytest.mark.upstream(UPSTREAM, "HttpRestApiUtilTest.TestParseModelInfoForGet")
def test_parse_model_info_for_get():
    assert parse_model_info("GET", f"/v1/models/modelname{RESERVED}")[0] == f"modelname{DECODED}"
    name, version, _, _ = parse_model_info("GET", "/v1/models/modelname/versions/99")
    assert (name, version) == ("modelname", 99)
    name, _, label, _ = parse_model_info("GET", "/v1/models/modelname/labels/latest")
    assert (name, label) == ("modelname", "latest")
    name, _, label, _ = parse_model_info("GET", f"/v1/models/modelname/labels/latest{RESERVED}")
    assert (name, label) == ("modelname", f"latest{DECODED}")
    name, _, label, subresource = parse_model_info("GET", "/v1/models/modelname/labels/latest/metadata")
    assert (name, label, subresource) == ("modelname", "latest", "metadata")
    name, _, label, subresource = parse_model_info(
        "GET", f"/v1/models/modelname{RESERVED}/labels/latest{RESERVED}/metadata")
    assert (name, label, subresource) == (f"modelname{DECODED}", f"latest{DECODED}", "metadata")
    for path in ("/v1/foo", "/v1/models/foo:predict", "/v1/models/foo/version/50:predict"):
        assert parse_model_info("GET", path) is None, path


@pytest.mark.upstream(UPSTREAM, "HttpRestApiUtilTest.TestParseModelInfoForPost")
def test_parse_model_info_for_post():
    name, _, _, method = parse_model_info("POST", f"/v1/models/modelname{RESERVED}:predict")
    assert (name, method) == (f"modelname{DECODED}", "predict")
    name, version, _, method = parse_model_info("POST", "/v1/models/modelname/versions/99:predict")
    assert (name, version, method) == ("modelname", 99, "predict")
    name, _, label, method = parse_model_info("POST", "/v1/models/modelname/labels/latest:predict")
    assert (name, label, method) == ("modelname", "latest", "predict")
    name, _, label, method = parse_model_info("POST", f"/v1/models/modelname/labels/latest{RESERVED}:predict")
    assert (name, label, method) == ("modelname", f"latest{DECODED}", "predict")
    name, _, label, method = parse_model_info(
        "POST", f"/v1/models/modelname{RESERVED}/labels/latest{RESERVED}:predict")
    assert (name, label, method) == (f"modelname{DECODED}", f"latest{DECODED}", "predict")
    for path in ("/v1/foo", "/v1/models", "/v1/models/foo/version/50:predict",
                 "/v1/models/foo/versions/string:predict", "/v1/models/foo/metadata",
                 "/v1/models/foo/versions/50/labels/some_label:regress"):
        assert parse_model_info("POST", path) is None, path
    # Parsed, but the version does not fit an int64.
    with pytest.raises(ServingError) as info:
        parse_model_info("POST", f"/v1/models/foo/versions/{2 ** 64 - 1}:predict")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Failed to convert version" in info.value.message
