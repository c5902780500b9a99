"""Classify, Regress and MultiInference in `align-tf serve` beyond the upstream suite's cases, on
small SavedModels written here (TF2 `tf.Module`s and a TF1 graph with TF1 method names), served
in-process on 127.0.0.1. Each test names the TF Serving 2.20 source it follows:
servables/tensorflow/{classifier,regressor,multi_inference,util}.cc, predict_util.cc,
util/json_tensor.cc, model_servers/http_rest_api_handler.cc.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from support import free_port

from align_tf.errors import ServingError
from align_tf.serving import example_json
from align_tf.serving.limits import RequestLimits
from align_tf.serving.server import ModelConfig, ModelManager, start_grpc_server, start_rest_server
from align_tf.serving.server.versions import LoadOptions

FEATURES = {"x": tf.io.FixedLenFeature([1], tf.float32),
            "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
EXAMPLES = [tf.TensorSpec([None], tf.string, name="inputs")]
PREDICT_NAME = "tensorflow/serving/predict"


def save_half_plus_two_tf2(path: str) -> None:
    """saved_model_half_plus_two.py's HalfPlusTwoModel (TF2: every signature says predict)."""
    module = tf.Module()
    module.a, module.b, module.c = tf.Variable(0.5), tf.Variable(2.0), tf.Variable(3.0)

    def x_of(serialized):
        return tf.io.parse_example(serialized, FEATURES)["x"]

    regress = tf.function(lambda inputs: {"outputs": module.a * x_of(inputs) + module.b}, input_signature=EXAMPLES)
    classify = tf.function(lambda inputs: {"scores": module.a * x_of(inputs) + module.b}, input_signature=EXAMPLES)
    float_in = tf.function(lambda inputs: {"scores": module.a * inputs + module.c},
                           input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
    module.fns = [regress, classify, float_in]
    tf.saved_model.save(module, path, signatures={"regress_x_to_y": regress, "classify_x_to_y": classify,
                                                  "classify_x2_to_y3": float_in})


def save_half_plus_two_tf1(path: str) -> None:
    """A TF1 graph with TF1 method names: classify / regress over a tf_example placeholder, a
    predict signature, and one with a method name of its own."""
    tf1 = tf.compat.v1
    utils = tf1.saved_model.signature_def_utils
    info = tf1.saved_model.utils.build_tensor_info
    with tf.Graph().as_default():
        serialized = tf1.placeholder(tf.string, [None], name="tf_example")
        a, b = tf1.Variable(0.5, name="a"), tf1.Variable(2.0, name="b")
        y = tf.identity(a * tf1.io.parse_example(serialized, FEATURES)["x"] + b, name="y")
        x = tf1.placeholder(tf.float32, [None], name="x")
        y_of_x = tf.identity(a * x + b, name="y_of_x")
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            builder = tf1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "classify_x_to_y": utils.classification_signature_def(serialized, None, y),
                "regress_x_to_y": utils.regression_signature_def(serialized, y),
                "serving_default": utils.predict_signature_def({"x": x}, {"y": y_of_x}),
                "custom": utils.build_signature_def({"x": info(x)}, {"y": info(y_of_x)}, "custom/method")})
            builder.save()


def save_odd_outputs(path: str) -> None:
    """Signatures over examples whose outputs break one rule of PostProcessClassificationResult /
    PostProcessRegressionResult each, plus labels that are and are not UTF-8."""
    def count(inputs):
        return tf.shape(inputs)[0]

    def labels(values):
        return lambda inputs: {"classes": tf.tile(tf.constant([values]), [count(inputs), 1]),
                               "scores": tf.tile(tf.constant([[0.25, 0.75]]), [count(inputs), 1])}

    bodies = {
        "classes_1d": lambda inputs: {"classes": tf.fill([count(inputs)], "a")},
        "scores_int": lambda inputs: {"scores": tf.ones([count(inputs), 1], tf.int32)},
        "scores_batch": lambda inputs: {"scores": tf.ones([count(inputs) + 1, 1])},
        "widths": lambda inputs: {"classes": tf.fill([count(inputs), 2], "a"), "scores": tf.ones([count(inputs), 3])},
        "three_outputs": lambda inputs: {"scores": tf.ones([count(inputs), 1]), "classes": tf.fill([count(inputs), 1], "a"),
                                         "extra": tf.ones([1])},
        "utf8_labels": labels([b"caf\xc3\xa9", b"b\"q\\"]),
        "bytes_labels": labels([b"\xff\xfe", b"ok"]),
        "regress_2col": lambda inputs: {"outputs": tf.ones([count(inputs), 2])},
        "regress_double": lambda inputs: {"outputs": tf.ones([count(inputs)], tf.float64)},
        "regress_batch": lambda inputs: {"outputs": tf.ones([count(inputs) + 1])},
        "regress_nonfinite": lambda inputs: {"outputs": tf.constant([0.2, math.inf, 1.0, -math.inf, math.nan])[:count(inputs)]},
    }
    module = tf.Module()
    signatures = {name: tf.function(body, input_signature=EXAMPLES) for name, body in bodies.items()}
    signatures["two_inputs"] = tf.function(lambda inputs, other: {"scores": tf.ones([count(inputs), 1])},
                                           input_signature=EXAMPLES + [tf.TensorSpec([None], tf.string, name="other")])
    signatures["no_inputs_key"] = tf.function(lambda examples: {"scores": tf.ones([count(examples), 1])},
                                              input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    module.fns = list(signatures.values())
    tf.saved_model.save(module, path, signatures=signatures)


class Server:
    def __init__(self, manager: ModelManager):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.manager = manager
        port, self.rest_port = free_port(), free_port()
        self.grpc_server, _ = start_grpc_server(manager, f"127.0.0.1:{port}", 64 << 20, 4)
        self.rest_server = start_rest_server(manager, "127.0.0.1", self.rest_port, 64 << 20, 4)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def rpc(self, method: str, request):
        try:
            return grpc.StatusCode.OK, "", getattr(self.stub, method)(request, timeout=30)
        except grpc.RpcError as e:
            return e.code(), e.details(), None

    def post(self, path: str, body) -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{self.rest_port}{path}", data), timeout=30) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def close(self):
        self.channel.close()
        self.rest_server.shutdown()
        self.rest_server.server_close()
        self.grpc_server.stop(0)


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference_apis")
    save_half_plus_two_tf2(str(root / "tf2" / "1"))
    save_half_plus_two_tf1(str(root / "tf1" / "1"))
    save_odd_outputs(str(root / "odd" / "7"))
    return root


def configs(root):
    return [ModelConfig(name=n, base_path=str(root / n)) for n in ("tf2", "tf1", "odd")]


@pytest.fixture(scope="module")
def server(model_root):
    manager = ModelManager(configs(model_root), poll_seconds=0)
    manager.poll()
    server = Server(manager)
    yield server
    server.close()


@pytest.fixture(scope="module")
def checked_server(model_root):
    """--enable_signature_method_name_check=true."""
    manager = ModelManager(configs(model_root), poll_seconds=0,
                           load_options=LoadOptions(method_name_check=True))
    manager.poll()
    server = Server(manager)
    yield server
    server.close()


def examples_input(*examples, context=None):
    """An Input of float-feature examples ({"x": 2.0}), with a context when given."""
    from tensorflow_serving.apis import input_pb2

    request_input = input_pb2.Input()
    target = request_input.example_list_with_context.examples if context is not None \
        else request_input.example_list.examples
    if context is not None:
        for key, value in context.items():
            request_input.example_list_with_context.context.features.feature[key].float_list.value.append(value)
    for features in examples:
        example = target.add()
        for key, value in features.items():
            example.features.feature[key].float_list.value.append(value)
    return request_input


def classify_request(model, signature, request_input):
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest(input=request_input)
    request.model_spec.name, request.model_spec.signature_name = model, signature
    return request


def regress_request(model, signature, request_input):
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest(input=request_input)
    request.model_spec.name, request.model_spec.signature_name = model, signature
    return request


# -- results ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["tf1", "tf2"])
def test_classify_and_regress_answer_per_example_with_the_served_model_spec(server, model):
    """classifier.cc / regressor.cc: one Classifications (one Class per score column) or one
    Regression per example, the reply's model_spec with the served version and the signature."""
    code, details, reply = server.rpc("Classify", classify_request(
        model, "classify_x_to_y", examples_input({"x": 2.0}, {"x": 80.0}, {"x": -4.0})))
    assert code == grpc.StatusCode.OK, details
    assert [[c.score for c in k.classes] for k in reply.result.classifications] == [[3.0], [42.0], [0.0]]
    assert [[c.label for c in k.classes] for k in reply.result.classifications] == [[""], [""], [""]]
    assert (reply.model_spec.name, reply.model_spec.signature_name, reply.model_spec.version.value) == \
        (model, "classify_x_to_y", 1)

    code, details, reply = server.rpc("Regress", regress_request(
        model, "regress_x_to_y", examples_input({"x": 2.0}, {"x": 80.0})))
    assert code == grpc.StatusCode.OK, details
    assert [r.value for r in reply.result.regressions] == [3.0, 42.0]
    assert reply.model_spec.signature_name == "regress_x_to_y"

    status, body = server.post(f"/v1/models/{model}:classify",
                               {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": [10.0]}]})
    assert (status, json.loads(body)) == (200, {"results": [[["", 3.0]], [["", 7.0]]]})
    status, body = server.post(f"/v1/models/{model}/versions/1:regress",
                               {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert (status, json.loads(body)) == (200, {"results": [3.0]})


def test_context_features_are_merged_into_each_example(server):
    """util.cc InputToSerializedExampleTensor: the context's bytes go before each example's, so
    parsing merges them and the example's own features win; REST's "context" (json_tensor.cc)
    makes the same Input."""
    request = regress_request("tf2", "regress_x_to_y", examples_input({}, {"x": 2.0}, context={"x": 10.0}))
    code, details, reply = server.rpc("Regress", request)
    assert code == grpc.StatusCode.OK, details
    assert [r.value for r in reply.result.regressions] == [7.0, 3.0]
    status, body = server.post("/v1/models/tf2:regress", {"signature_name": "regress_x_to_y",
                                                          "context": {"x": 10.0}, "examples": [{}, {"x": 2.0}]})
    assert (status, json.loads(body)) == (200, {"results": [7.0, 3.0]})


def test_labels_pass_as_utf8_and_rest_writes_scores_as_write_decimal(server):
    """PostProcessClassificationResult copies the label bytes; MakeJsonFromClassificationResult
    writes [label, score] pairs, scores by WriteDecimal (non-finite ones as NaN / Infinity)."""
    code, details, reply = server.rpc("Classify", classify_request("odd", "utf8_labels", examples_input({}, {})))
    assert code == grpc.StatusCode.OK, details
    assert [[(c.label, c.score) for c in k.classes] for k in reply.result.classifications] == \
        [[("café", 0.25), ('b"q\\', 0.75)]] * 2
    status, body = server.post("/v1/models/odd:classify", {"signature_name": "utf8_labels", "examples": [{}]})
    assert status == 200 and json.loads(body) == {"results": [[["café", 0.25], ['b"q\\', 0.75]]]}
    status, body = server.post("/v1/models/odd:regress", {"signature_name": "regress_nonfinite", "examples": [{}] * 5})
    assert status == 200 and body.replace(b" ", b"") == b'{"results":[0.2,Infinity,1.0,-Infinity,NaN]}'


def test_labels_that_are_not_utf8(server):
    """REST writes a label's bytes as they are (rapidjson does not validate); a gRPC Class.label
    is a proto3 string that no client parses unless it is UTF-8: one clear error there."""
    status, body = server.post("/v1/models/odd:classify", {"signature_name": "bytes_labels", "examples": [{}]})
    assert status == 200 and body.replace(b" ", b"") == b'{"results":[[["\xff\xfe",0.25],["ok",0.75]]]}'
    code, details, _ = server.rpc("Classify", classify_request("odd", "bytes_labels", examples_input({})))
    assert code == grpc.StatusCode.INTERNAL and "is not UTF-8" in details and "\\xff\\xfe" in details


def test_multi_inference_runs_each_task_on_the_first_task_s_version(server):
    """multi_inference.cc / multi_inference_helper.cc: results in task order, each with its own
    model_spec and the version the first task's ModelSpec picked."""
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest(input=examples_input({"x": 2.0}, {"x": 4.0}))
    for signature, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                              ("regress_x_to_y", "tensorflow/serving/regress")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "tf1", signature
    request.tasks[0].model_spec.version.value = 1
    code, details, reply = server.rpc("MultiInference", request)
    assert code == grpc.StatusCode.OK, details
    assert reply == text_format.Parse("""
        results { model_spec { name: "tf1" signature_name: "classify_x_to_y" version { value: 1 } }
                  classification_result { classifications { classes { score: 3 } }
                                          classifications { classes { score: 4 } } } }
        results { model_spec { name: "tf1" signature_name: "regress_x_to_y" version { value: 1 } }
                  regression_result { regressions { value: 3 } regressions { value: 4 } } }""",
        inference_pb2.MultiInferenceResponse())
    request.tasks[0].model_spec.version.value = 9
    assert server.rpc("MultiInference", request)[:2] == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(tf1, 9)")
    assert server.rpc("MultiInference", inference_pb2.MultiInferenceRequest())[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")


def test_requests_are_counted_for_prometheus(server):
    before = server.manager.counters.get(("tf2", "regress_x_to_y", "OK"), 0)
    server.rpc("Regress", regress_request("tf2", "regress_x_to_y", examples_input({"x": 1.0})))
    server.rpc("Regress", regress_request("tf2", "regress_x_to_y", examples_input()))
    assert server.manager.counters[("tf2", "regress_x_to_y", "OK")] == before + 1
    assert server.manager.counters[("tf2", "regress_x_to_y", "INVALID_ARGUMENT")] >= 1


# -- the method-name check ------------------------------------------------------------------------
def test_tf2_signatures_classify_without_the_method_name_check(server, checked_server):
    """classifier.cc GetClassificationSignatureDef: the method name is checked only with
    --enable_signature_method_name_check (off by default), else the inputs and outputs are."""
    request = classify_request("tf2", "classify_x_to_y", examples_input({"x": 2.0}))
    assert server.rpc("Classify", request)[0] == grpc.StatusCode.OK
    assert checked_server.rpc("Classify", request)[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT, "Expected classification signature method_name to be "
        f"tensorflow/serving/classify. Was: {PREDICT_NAME}")
    request = regress_request("tf2", "regress_x_to_y", examples_input({"x": 2.0}))
    assert checked_server.rpc("Regress", request)[:2] == (
        grpc.StatusCode.INVALID_ARGUMENT, "Expected regression signature method_name to be "
        f"tensorflow/serving/regress. Was: {PREDICT_NAME}")
    # TF1 names: the check passes.
    assert checked_server.rpc("Classify", classify_request(
        "tf1", "classify_x_to_y", examples_input({"x": 2.0})))[0] == grpc.StatusCode.OK


def test_predict_with_the_method_name_check(server, checked_server):
    """predict_util.cc VerifySignature: with the check on, Predict runs predict, classify and
    regress signatures and answers INTERNAL for other method names; off, it runs any."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "tf1", "custom"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], tf.float32))
    code, details, reply = server.rpc("Predict", request)
    assert code == grpc.StatusCode.OK and tf.make_ndarray(reply.outputs["y"]).tolist() == [3.0], details
    assert checked_server.rpc("Predict", request)[:2] == (
        grpc.StatusCode.INTERNAL, "Expected prediction signature method_name to be one of "
        "{tensorflow/serving/predict, tensorflow/serving/classify, tensorflow/serving/regress}. "
        "Was: custom/method")
    request.model_spec.signature_name = "serving_default"
    assert checked_server.rpc("Predict", request)[0] == grpc.StatusCode.OK


def test_the_cli_flag_takes_tf_serving_s_booleans():
    from align_tf.cli import build_parser

    for argv, value in (([], False), (["--enable_signature_method_name_check"], True),
                        (["--enable_signature_method_name_check=true"], True),
                        (["--enable_signature_method_name_check=false"], False)):
        assert build_parser().parse_args(["serve"] + argv).enable_signature_method_name_check is value


# -- what TF Serving refuses, in its words ------------------------------------------------------
SIGNATURE_ERRORS = [  # (method, model, signature, words); all INVALID_ARGUMENT
    # GetClassificationSignatureDef / GetRegressionSignatureDef
    ("Classify", "tf2", "nope", "No signature was found with the name: nope"),
    ("Regress", "tf2", "", "No signature was found with the name: serving_default"),
    # PreProcessClassification / PreProcessRegression
    ("Classify", "odd", "two_inputs", "Expected one input Tensor."),
    ("Classify", "odd", "three_outputs", "Expected one or two output Tensors, found 3"),
    ("Classify", "odd", "no_inputs_key", 'No classification inputs found in SignatureDef: inputs {\n  key: "examples"'),
    ("Classify", "tf2", "regress_x_to_y", 'Expected classification signature outputs to contain at least one of '
                                          '"classes" or "scores". Signature was: inputs {'),
    ("Regress", "tf1", "classify_x_to_y", 'No regression outputs found in SignatureDef: inputs {'),
    ("Regress", "odd", "widths", "Expected one output Tensor."),
    # PostProcessClassificationResult
    ("Classify", "odd", "classes_1d", "Expected Tensor shape: [batch_size num_classes] but got [2]"),
    ("Classify", "odd", "scores_int", "Expected scores Tensor of DT_FLOAT. Got: DT_INT32"),
    ("Classify", "odd", "scores_batch", "Expected scores output batch size of 2. Got: 3"),
    ("Classify", "odd", "widths", "Tensors class and score should match in dim_size(1). Got 2 vs. 3"),
    # PostProcessRegressionResult
    ("Regress", "odd", "regress_2col", "Expected output Tensor shape to be either [batch_size] or "
                                       "[batch_size, 1] but got [2,2]"),
    ("Regress", "odd", "regress_batch", "Input batch size did not match output batch size: 2 vs. 3"),
    ("Regress", "odd", "regress_double", "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
]


@pytest.mark.parametrize("method,model,signature,words", SIGNATURE_ERRORS,
                         ids=[f"{e[0]}-{e[2] or 'default'}" for e in SIGNATURE_ERRORS])
def test_signature_and_result_errors(server, method, model, signature, words):
    make = classify_request if method == "Classify" else regress_request
    code, details, _ = server.rpc(method, make(model, signature, examples_input({"x": 1.0}, {"x": 2.0})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details, details
    status, body = server.post(f"/v1/models/{model}:{method.lower()}", {"signature_name": signature,
                                                              "examples": [{"x": 1.0}, {"x": 2.0}]})
    assert status == 400 and words in json.loads(body)["error"], body


def test_request_errors(server):
    """classification_service.cc / regression_service.cc: "Missing ModelSpec"; util.cc: an
    Input without examples is "Input is empty."; a signature whose input is not a string
    vector gets the runtime's dtype error; a model that is not there is NOT_FOUND."""
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    assert server.rpc("Classify", classification_pb2.ClassificationRequest())[:2] == \
        (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    assert server.rpc("Regress", regression_pb2.RegressionRequest())[:2] == \
        (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    for request_input in (examples_input(), examples_input(context={"x": 1.0})):
        assert server.rpc("Classify", classify_request("tf2", "classify_x_to_y", request_input))[:2] == \
            (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    code, details, _ = server.rpc("Classify", classify_request("tf2", "classify_x2_to_y3", examples_input({"x": 1.0})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Expects arg[0] to be float but string is provided" in details
    code, details, _ = server.rpc("Classify", classify_request("tf2", "classify_x_to_y", examples_input({"y": 1.0})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Feature: x (data type: float) is required" in details
    assert server.rpc("Regress", regress_request("nope", "", examples_input({"x": 1.0})))[:2] == \
        (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")


def test_examples_are_bounded_before_they_are_built(model_root):
    """A context is copied before every example (util.cc), so 4 MiB of context and 60,000 empty
    examples would be 240 GB for TF Serving; here the batch bound and the decoded-size bound
    refuse it from the counts alone."""
    manager = ModelManager(configs(model_root), poll_seconds=0,
                           limits=RequestLimits(max_message_bytes=8 << 20, max_decoded_bytes=8 << 20,
                                                max_batch_size=100))
    manager.poll()
    from tensorflow_serving.apis import input_pb2

    request_input = input_pb2.Input()
    request_input.example_list_with_context.context.features.feature["pad"].bytes_list.value.append(b"x" * (1 << 20))
    for _ in range(20):
        request_input.example_list_with_context.examples.add()
    with pytest.raises(ServingError) as info:
        manager.regress("tf2", None, None, "regress_x_to_y", request_input)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    context_bytes = request_input.example_list_with_context.context.ByteSize()
    assert f"20 examples with a context of {context_bytes} bytes would take" in info.value.message
    assert "the limit is 8388608 bytes" in info.value.message
    many = examples_input(*[{"x": 1.0}] * 101)
    with pytest.raises(ServingError) as info:
        manager.classify("tf2", None, None, "classify_x_to_y", many)
    assert info.value.message == "input: Task size 101 is larger than maximum input batch size 100"
    version, values = manager.regress("tf2", None, None, "regress_x_to_y", examples_input(*[{"x": 2.0}] * 100))
    assert version == 1 and values.tolist() == [3.0] * 100


# -- the examples JSON (json_tensor.cc) -----------------------------------------------------------
def parse_body(text: str):
    from align_tf.serving.json_tensor import parse_json_body

    return example_json.request_from_json(parse_json_body(text.encode()))


def test_json_examples_are_typed_as_add_value_to_feature():
    """AddValueToFeature: strings and b64 -> bytes_list, decimals / exponents / NaN -> float_list,
    integers and booleans -> int64_list; a scalar is a list of one; integers past 64 bits are
    doubles, as rapidjson reads them; "context" makes example_list_with_context."""
    from tensorflow_serving.apis import input_pb2

    signature, request_input = parse_body("""{"signature_name": "custom_signture",
        "context": {"query": "pizza", "location": ["sfo"]},
        "examples": [{"names": ["foo", "bar"], "ratings": [8.0, 9.0, NaN, Infinity], "age": 20},
                     {"names": ["baz", {"b64": "aGVsbG8="}], "ratings": 6.0, "intboolmix": [1, true, false],
                      "big": [1e2, 36893488147419103232], "empty": []},
                     {"names": "bar", "ratings": -Infinity}]}""")
    assert signature == "custom_signture"
    expected = text_format.Parse("""example_list_with_context {
        context { features {
            feature { key: "query" value { bytes_list { value: "pizza" } } }
            feature { key: "location" value { bytes_list { value: "sfo" } } } } }
        examples { features {
            feature { key: "names" value { bytes_list { value: "foo" value: "bar" } } }
            feature { key: "ratings" value { float_list { value: 8 value: 9 value: nan value: inf } } }
            feature { key: "age" value { int64_list { value: 20 } } } } }
        examples { features {
            feature { key: "names" value { bytes_list { value: "baz" value: "hello" } } }
            feature { key: "ratings" value { float_list { value: 6 } } }
            feature { key: "intboolmix" value { int64_list { value: 1 value: 1 value: 0 } } }
            feature { key: "big" value { float_list { value: 100 value: 36893488147419103232 } } }
            feature { key: "empty" value { } } } }
        examples { features {
            feature { key: "names" value { bytes_list { value: "bar" } } }
            feature { key: "ratings" value { float_list { value: -inf } } } } } }""", input_pb2.Input())
    got = request_input.example_list_with_context
    assert got.context == expected.example_list_with_context.context
    for mine, theirs in zip(got.examples, expected.example_list_with_context.examples):
        ratings = mine.features.feature["ratings"].float_list.value
        assert np.array_equal(ratings, theirs.features.feature["ratings"].float_list.value, equal_nan=True)
        del mine.features.feature["ratings"], theirs.features.feature["ratings"]
        assert mine == theirs
    _, plain = parse_body('{"examples": [{"x": 1}]}')
    assert plain.WhichOneof("kind") == "example_list" and plain.example_list.examples[0].features.feature["x"] \
        .int64_list.value == [1]


JSON_ERRORS = [  # json_tensor.cc FillClassifyRegressRequestFromJson / AddValueToFeature
    ('{"signature_name": ["hello"], "examples": [{"names": ["foo"]}]}', "'signature_name' key must be a string value."),
    ('{"context": [{"names": ["foo", "bar"]}]}', "Example must be JSON object but got JSON Array"),
    ('{"context": {}}', "When method is classify, key 'examples' is expected and was not found"),
    ('{"examples": {"names": ["foo", "bar"]}}', "Expecting 'examples' value to be an list/array"),
    ('{"examples": []}', "'examples' value is an empty array"),
    ('{"examples": [[{"names": ["foo", "bar"]}]]}', "Example must be JSON object but got JSON Array"),
    ('{"examples": [{"names": [10, null]}]}', "Feature: names has element with unexpected JSON type: Null"),
    ('{"examples": [{"names": [10, 10.0]}]}', "Unexpected element type in feature: names expecting type: int64"),
    ('{"examples": [{"names": [1.5, "a"]}]}', "Unexpected element type in feature: names expecting type: float"),
    ('{"examples": [{"names": ["a", true]}]}', "Unexpected element type in feature: names expecting type: bytes"),
    ('{"examples": [{"names": [10, {"test": 10}]}]}', "Feature: names has element with unexpected JSON type: Object"),
    ('{"examples": [{"names": [[10], 20]}]}', "Feature: names has element with unexpected JSON type: Array"),
    ('{"examples": [{"names": [20, 18446744073709551603]}]}', "Feature: names has uint64_t element. Only int64_t is supported."),
    ('{"examples": [{"names": {"b64": "not base64!"}}]}', "Unable to base64 decode"),
]


@pytest.mark.parametrize("body,words", JSON_ERRORS, ids=[w[:40] for _, w in JSON_ERRORS])
def test_json_errors_in_tf_serving_s_words(body, words):
    with pytest.raises(ServingError) as info:
        parse_body(body)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and words in info.value.message


def test_json_errors_over_rest(server):
    status, body = server.post("/v1/models/tf2:regress", b'{"signature_name": "regress_x_to_y", "examples": 5}')
    assert status == 400 and "Expecting 'examples' value to be an list/array" in json.loads(body)["error"]
    status, body = server.post("/v1/models/tf2:classify", b'{"examples": [{"x": [1, 2.5]}]}')
    assert status == 400 and json.loads(body)["error"] == "Unexpected element type in feature: x expecting type: int64"


def test_result_json_errors():
    """MakeJsonFromClassificationResult / MakeJsonFromRegressionResult refuse empty results."""
    with pytest.raises(ServingError, match="Cannot convert empty ClassificationResults to JSON"):
        example_json.classification_json(None, np.zeros((0, 2), np.float32))
    with pytest.raises(ServingError, match="Cannot convert empty RegressionResults to JSON"):
        example_json.regression_json(np.zeros(0, np.float32))
    assert json.loads(example_json.classification_json(np.array([[b"car", b"bike"]], object),
                                                       np.array([[0.2, 0.7]], np.float32))) == \
        {"results": [[["car", 0.2], ["bike", 0.7]]]}


# -- a seeded fuzz: every request gets a status, the server carries on --------------------------
def _mutate(rng, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data)) if data else 0
        op = rng.randrange(3)
        if op == 0 and data:
            data[at] = rng.getrandbits(8)
        elif op == 1:
            del data[at:at + rng.randint(1, 8)]
        else:
            data[at:at] = rng.choice([b"[", b"{", b'"', b"1e999", b"\xff", b"\\ud800", b",", b"null"]) * rng.randint(1, 20)
    return bytes(data)


def _random_features(rng, features) -> None:
    if rng.random() < 0.6:
        features["x"].float_list.value.append(2.0)
        return
    for _ in range(rng.randint(0, 3)):
        feature = features[rng.choice(["x", "x2", "y", "", "image/encoded"])]
        kind = rng.randrange(4)
        for _ in range(rng.randint(0, 3)):
            if kind == 0:
                feature.float_list.value.append(rng.choice([2.0, -1e38, math.nan, math.inf, 0.0]))
            elif kind == 1:
                feature.int64_list.value.append(rng.choice([0, 1, -2 ** 63, 2 ** 63 - 1]))
            elif kind == 2:
                feature.bytes_list.value.append(rng.randbytes(rng.randint(0, 20)))


def _random_input(rng, request_input) -> None:
    kind = rng.randrange(4)
    if kind == 3:
        return  # no examples at all
    target = request_input.example_list.examples if kind < 2 else request_input.example_list_with_context.examples
    if kind == 2:
        _random_features(rng, request_input.example_list_with_context.context.features.feature)
    for _ in range(rng.randint(0, 5)):
        _random_features(rng, target.add().features.feature)


SIGNATURES = ["classify_x_to_y", "regress_x_to_y", "classify_x2_to_y3", "", "nope", "utf8_labels", "bytes_labels",
              "widths", "regress_nonfinite", "two_inputs", "__saved_model_init_op", "serving_default"]


def test_fuzzed_classify_regress_and_multi_inference_requests(server):
    """300 random gRPC requests (Classify, Regress, MultiInference: random models, signatures,
    methods, features, contexts, empty inputs) and 300 mutated REST bodies (:classify,
    :regress): each answered with a gRPC status other than UNKNOWN (an uncaught error) or an
    HTTP status other than 500 with a JSON error; a good request still answers afterwards."""
    import random

    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    rng = random.Random(19)
    codes = {}
    for _ in range(300):
        method = rng.choice(["Classify", "Regress", "MultiInference"])
        if method == "MultiInference":
            request = inference_pb2.MultiInferenceRequest()
            for _ in range(rng.randint(0, 3)):
                task = request.tasks.add(method_name=rng.choice(["tensorflow/serving/classify", "tensorflow/serving/regress",
                                                                 PREDICT_NAME, ""]))
                task.model_spec.name = rng.choice(["tf1", "tf2", "odd", "tf2", ""])
                task.model_spec.signature_name = rng.choice(SIGNATURES)
        else:
            request = (classification_pb2.ClassificationRequest if method == "Classify"
                       else regression_pb2.RegressionRequest)()
            if rng.random() < 0.5:  # one that can work
                request.model_spec.name = rng.choice(["tf1", "tf2"])
                request.model_spec.signature_name = f"{method.lower()}_x_to_y"
            elif rng.random() < 0.95:
                request.model_spec.name = rng.choice(["tf1", "tf2", "odd", "nope", ""])
                request.model_spec.signature_name = rng.choice(SIGNATURES)
                if rng.random() < 0.2:
                    request.model_spec.version.value = rng.choice([0, 1, 7, 2 ** 63 - 1])
        _random_input(rng, request.input)
        code, details, _ = server.rpc(method, request)
        assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.UNAVAILABLE), (method, details, request)
        codes[code.name] = codes.get(code.name, 0) + 1
    bodies = [{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": [1.0]}]},
              {"signature_name": "regress_x_to_y", "context": {"x": 1}, "examples": [{}, {"x2": [1.5]}]},
              {"signature_name": "utf8_labels", "examples": [{"a": {"b64": "YQ=="}, "b": [True, 3]}]}]
    statuses = {}
    for _ in range(300):
        body = json.dumps(rng.choice(bodies)).encode()
        body = _mutate(rng, body) if rng.random() < 0.7 else body
        status, reply = server.post(rng.choice(["/v1/models/tf2:classify", "/v1/models/tf1:regress",
                                                "/v1/models/odd:classify", "/v1/models/tf2:regress"]), body)
        assert status in (200, 400, 404), (body, reply[:300])
        assert isinstance(json.loads(reply.decode("utf-8", "replace").replace("NaN", "0")), dict), reply[:200]
        statuses[status] = statuses.get(status, 0) + 1
    assert codes.get("OK", 0) > 20 and codes.get("INVALID_ARGUMENT", 0) > 20, codes
    assert statuses.get(200, 0) > 10 and statuses.get(400, 0) > 10, statuses
    code, details, reply = server.rpc("Regress", regress_request("tf2", "regress_x_to_y", examples_input({"x": 2.0})))
    assert code == grpc.StatusCode.OK and reply.result.regressions[0].value == 3.0, details


def test_warmup_records_of_classify_regress_and_multi_inference_are_replayed(tmp_path):
    """saved_model_warmup.cc RunWarmupRequest: classify, regress and multi-inference records run
    at load time like predict ones, and one that fails fails the load."""
    import shutil

    from tensorflow_serving.apis import inference_pb2, prediction_log_pb2

    from align_tf.protocol import WARMUP_FILE
    from align_tf.serving.server.versions import LoadedVersion

    save_half_plus_two_tf2(str(tmp_path / "good" / "1"))
    multi = inference_pb2.MultiInferenceRequest(input=examples_input({"x": 1.0}))
    task = multi.tasks.add(method_name="tensorflow/serving/regress")
    task.model_spec.name, task.model_spec.signature_name = "m", "regress_x_to_y"
    records = [prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
                   request=classify_request("m", "classify_x_to_y", examples_input({"x": 1.0})))),
               prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(
                   request=regress_request("m", "regress_x_to_y", examples_input({"x": 1.0})))),
               prediction_log_pb2.PredictionLog(multi_inference_log=prediction_log_pb2.MultiInferenceLog(
                   request=multi))]

    def write(folder, entries):
        path = folder / WARMUP_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for entry in entries:
                writer.write(entry.SerializeToString())

    write(tmp_path / "good" / "1", records)
    assert LoadedVersion("m", 1, str(tmp_path / "good" / "1")).warmup_requests == 3

    shutil.copytree(tmp_path / "good" / "1", tmp_path / "bad" / "1")
    write(tmp_path / "bad" / "1", records + [prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
        request=classify_request("m", "classify_x_to_y", examples_input())))])
    manager = ModelManager([ModelConfig(name="m", base_path=str(tmp_path / "bad"))], poll_seconds=0)
    manager.poll()
    (version, state), = manager.model("m").status()
    assert (version, state.state) == (1, "END") and "Input is empty." in state.error_message
