"""ALIGN through TF Serving's Classify API: `align-tf export --labels FILE` adds the classify
signature `zero_shot` (serialized tf.Examples with the image bytes under `image/encoded` ->
`classes`, `scores`), and Classify over gRPC and REST `:classify` answer the same scores as the
`classify` signature on the same images and prompted labels, for 1 and 16 images.

The server is the local one, in-process, on 127.0.0.1; the result formats are TF Serving's
(classifier.cc PostProcessClassificationResult, json_tensor.cc MakeJsonFromClassificationResult).
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf

from support import free_port

from align_tf import cli, export
from align_tf.protocol import read_saved_model_proto
from align_tf.serving.server import ModelConfig, ModelManager, start_grpc_server, start_rest_server

LABELS = ["red circle", "blue square", "green star", "a cat"]
PROMPTS = [f"a photo of {label}." for label in LABELS]  # the `single` template, as `classify` uses it
TEMPERATURE = 0.01


def sixteen_images(tiny) -> list[bytes]:
    """The fixture's six shape images and ten random ones in three formats and several sizes."""
    from PIL import Image

    images = [open(p, "rb").read() for paths in tiny["images"].values() for p in paths]
    rng = np.random.default_rng(7)
    while len(images) < 16:
        fmt = ("JPEG", "PNG", "BMP")[len(images) % 3]
        buffer = io.BytesIO()
        size = (int(rng.integers(20, 70)), int(rng.integers(20, 70)), 3)
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(buffer, format=fmt)
        images.append(buffer.getvalue())
    return images


@pytest.fixture(scope="module")
def deployment(tiny, tmp_path_factory):
    """The tiny checkpoint with temperature 0.01 (random towers give near-equal cosines; at 0.37
    every score is 0.25 +- 1e-4), exported by the CLI with --labels, served in-process."""
    from align_tf.models.align import AlignModel
    from align_tf.preprocessing.processor import AlignProcessor

    root = tmp_path_factory.mktemp("zero_shot")
    model = AlignModel.from_pretrained(tiny["model_dir"])
    model.temperature.assign(TEMPERATURE)
    model.save_pretrained(str(root / "model"), processor=AlignProcessor.from_pretrained(tiny["model_dir"]))
    labels_file = root / "labels.txt"
    labels_file.write_text("red circle\n  blue square \n\ngreen star\na cat\n", encoding="utf-8")
    base = root / "saved_models" / "align"
    assert cli.main(["export", "--model", str(root / "model"), "--output", str(base),
                     "--labels", str(labels_file)]) == 0
    manager = ModelManager([ModelConfig(name="align", base_path=str(base))], poll_seconds=0)
    manager.poll()
    grpc_port, rest_port = free_port(), free_port()
    grpc_server, _ = start_grpc_server(manager, f"127.0.0.1:{grpc_port}", 64 << 20, 4)
    rest_server = start_rest_server(manager, "127.0.0.1", rest_port, 64 << 20, 4)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    yield {"path": str(base / "1"), "stub": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "rest": f"http://127.0.0.1:{rest_port}", "images": sixteen_images(tiny)}
    channel.close()
    rest_server.shutdown()
    rest_server.server_close()
    grpc_server.stop(0)


def classify_signature_probs(stub, images) -> np.ndarray:
    """The `classify` signature's `probs` for the images and the prompted labels (Predict)."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "align", "classify"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(PROMPTS, dtype=tf.string))
    return tf.make_ndarray(stub.Predict(request, timeout=60).outputs["probs"])


def test_zero_shot_is_a_classify_signature_with_stock_ops(deployment):
    signature = read_saved_model_proto(deployment["path"]).meta_graphs[0].signature_def["zero_shot"]
    assert signature.method_name == "tensorflow/serving/classify"
    assert {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in signature.inputs.items()} == \
        {"inputs": (tf.string.as_datatype_enum, [-1])}
    assert {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in signature.outputs.items()} == \
        {"classes": (tf.string.as_datatype_enum, [-1, len(LABELS)]),
         "scores": (tf.float32.as_datatype_enum, [-1, len(LABELS)])}
    # The op check ran at export (it refuses what TF Serving lacks); nothing past the tokenizer's.
    assert set(export.check_serving_ops(deployment["path"])) <= export.SERVING_TEXT_OPS
    assert "ParseExampleV2" in export.graph_op_types(deployment["path"])


@pytest.mark.parametrize("count", [1, 16])
def test_grpc_classify_equals_the_classify_signature(deployment, count):
    from tensorflow_serving.apis import classification_pb2

    images = deployment["images"][:count]
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "align", "zero_shot"
    for image in images:
        request.input.example_list.examples.add().features.feature["image/encoded"].bytes_list.value.append(image)
    response = deployment["stub"].Classify(request, timeout=60)

    assert (response.model_spec.name, response.model_spec.signature_name, response.model_spec.version.value) \
        == ("align", "zero_shot", 1)
    assert len(response.result.classifications) == count
    for classification in response.result.classifications:
        assert [c.label for c in classification.classes] == LABELS
    scores = np.array([[c.score for c in k.classes] for k in response.result.classifications])
    expected = classify_signature_probs(deployment["stub"], images)
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
    if count > 1:  # the images get scores of their own: a mixed-up batch would show
        assert np.ptp(scores, axis=0).max() > 100 * 1e-5


@pytest.mark.parametrize("count", [1, 16])
def test_rest_classify_equals_the_classify_signature(deployment, count):
    images = deployment["images"][:count]
    body = {"signature_name": "zero_shot",
            "examples": [{"image/encoded": {"b64": base64.b64encode(im).decode()}} for im in images]}
    request = urllib.request.Request(deployment["rest"] + "/v1/models/align:classify",
                                     json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        results = json.loads(reply.read())["results"]
    assert len(results) == count
    assert all([pair[0] for pair in row] == LABELS for row in results)
    scores = np.array([[pair[1] for pair in row] for row in results])
    np.testing.assert_allclose(scores, classify_signature_probs(deployment["stub"], images), atol=1e-5, rtol=0)


def test_an_example_without_the_image_feature_is_the_graph_s_invalid_argument(deployment):
    """ParseExampleV2 refuses a missing required feature: INVALID_ARGUMENT naming it."""
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "align", "zero_shot"
    request.input.example_list.examples.add().features.feature["image/jpeg"].bytes_list.value.append(b"x")
    with pytest.raises(grpc.RpcError) as info:
        deployment["stub"].Classify(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image/encoded" in info.value.details()


def test_ensembled_templates_give_the_classify_command_s_scores(tiny, tmp_path):
    """Several templates: the class matrix is ensembled as ZeroShotClassifier (the `classify`
    command) ensembles it, so the signature answers that classifier's probabilities."""
    from align_tf.applications.zero_shot import ZeroShotClassifier

    templates = ["a photo of {}.", "a drawing of a {}.", "{}"]
    path = export.export_saved_model(tiny["model"], tiny["processor"], str(tmp_path / "align"),
                                     labels=LABELS, templates=templates, warmup=False)
    paths = [p for group in tiny["images"].values() for p in group]
    images = [open(p, "rb").read() for p in paths]
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[im]))})).SerializeToString()
        for im in images]
    out = tf.saved_model.load(path).signatures["zero_shot"](inputs=tf.constant(examples))
    expected = ZeroShotClassifier(tiny["model"], tiny["processor"], LABELS, templates=templates) \
        .probabilities(paths)
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5, rtol=0)
    assert out["classes"].numpy().tolist() == [[label.encode() for label in LABELS]] * len(images)


@pytest.mark.parametrize("content,words", [
    (None, "cannot read it"),
    ("\n \n", "no labels in it"),
    ("cat\ndog\ncat\n", "duplicate labels ['cat']"),
    (b"caf\xe9\n", "not UTF-8 text"),
])
def test_export_labels_file_errors_name_the_file(tmp_path, capsys, content, words):
    labels_file = tmp_path / "labels.txt"
    if isinstance(content, bytes):
        labels_file.write_bytes(content)
    elif content is not None:
        labels_file.write_text(content)
    code = cli.main(["export", "--model", "demo", "--output", str(tmp_path / "out"), "--labels", str(labels_file)])
    err = capsys.readouterr().err
    assert code == 2 and str(labels_file) in err and words in err, err
    assert not os.path.exists(tmp_path / "out")


def test_template_without_labels_is_refused(tmp_path, capsys):
    code = cli.main(["export", "--model", "demo", "--output", str(tmp_path / "out"), "--template", "{}"])
    assert code == 2 and "--template: only used with --labels" in capsys.readouterr().err
