"""`align-tf export --precision`: the exported towers are the frozen inference graphs of
in-process inference (align_tf/models/frozen.py) in the precision asked for, in a form every
TensorFlow runtime runs; float32 and bfloat16 exports served by `align-tf serve` (TensorFlow's
own kernels, as TF Serving's standard build) over gRPC give the float32 model's answers."""

import glob
import os
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from support import align_tf_command, checkout_env, free_port, stop_process

LABELS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]


@pytest.fixture(scope="module")
def demo():
    from align_tf.assets import demo_model_path, example_images_path
    from align_tf.models.align import AlignModel
    from align_tf.preprocessing.processor import AlignProcessor

    images = []
    # blue_square, green_triangle, red_circle, yellow_star: LABELS 1, 2, 0, 3
    for path in sorted(glob.glob(os.path.join(example_images_path(), "*"))):
        with open(path, "rb") as f:
            images.append(f.read())
    return (AlignModel.from_pretrained(demo_model_path()),
            AlignProcessor.from_pretrained(demo_model_path()), images)


def test_export_runs_the_in_process_graphs_in_the_precision_asked(demo, tmp_path):
    from align_tf.export import export_saved_model, load_saved_model
    from align_tf.protocol import read_saved_model_proto

    model, processor, images = demo
    pixels = processor(images=images)["pixel_values"]
    tokens = processor(text=LABELS, padding=True)
    text = np.asarray(model.get_text_features(**tokens))
    image = np.asarray(model.get_image_features(pixels))
    for precision in ("float32", "bfloat16"):
        folder = export_saved_model(model, processor, str(tmp_path / precision), warmup=False,
                                    precision=precision)
        loaded = load_saved_model(folder)
        served_text, served_image = loaded.embed_text(LABELS), loaded.embed_pixels(pixels)
        assert served_text.dtype == served_image.dtype == np.float32
        for ours, served in ((text, served_text), (image, served_image)):
            cosine = (ours * served).sum(1) / np.linalg.norm(ours, axis=1)
            if precision == "float32":  # the same graph as in process: the same numbers
                np.testing.assert_allclose(served, ours / np.linalg.norm(ours, axis=1, keepdims=True),
                                           atol=1e-6)
            else:
                assert cosine.min() > 0.999 and np.abs(cosine - 1).max() > 1e-7, cosine
        # The weights are constants of the graph (no variables to read), in that precision.
        graph = read_saved_model_proto(folder).meta_graphs[0].graph_def
        nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
        weights = [n for n in nodes if n.op == "Const" and n.attr["value"].tensor.tensor_shape.dim
                   and n.attr["value"].tensor.tensor_shape.dim[0].size >= 16]
        assert len(weights) > 50
        assert precision in {tf.as_dtype(n.attr["dtype"].type).name for n in weights}
        # Depthwise convs as DepthwiseConv2dNative, not oneDNN's grouped Conv2D (which
        # TensorFlow's own fused-conv kernel refuses: TF Serving's standard build has no oneDNN).
        # (One per block in each copy of the tower function the SavedModel stores.)
        depthwise = sum(n.op == "DepthwiseConv2dNative" for n in nodes)
        assert depthwise > 0 and depthwise % len(model.vision_model.blocks) == 0
        assert os.path.getsize(os.path.join(folder, "variables", "variables.data-00000-of-00001")) < 2**20


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_export_served_gives_the_float32_answers(demo, tmp_path, precision):
    from align_tf.serving.client import AlignServingClient

    model, processor, images = demo
    base = str(tmp_path / "align")
    done = subprocess.run(align_tf_command("export", "--model", "demo", "--output", base,
                                           "--precision", precision),
                          capture_output=True, text=True, timeout=600, env=checkout_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"({precision})" in done.stdout
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(align_tf_command("serve", "--model_name", "align", "--model_base_path",
                                               base, "--port", str(port), "--rest_api_port", "0"),
                              stdout=log, stderr=subprocess.STDOUT, env=checkout_env(),
                              start_new_session=True)
    try:
        with AlignServingClient(f"127.0.0.1:{port}", "align", timeout=30) as client:
            deadline = time.monotonic() + 300
            while True:
                assert server.poll() is None, open(tmp_path / "server.log").read()[-3000:]
                try:
                    client.wait_until_available(timeout=2)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline
            served = client.classify(images, LABELS)["probs"]
    finally:
        stop_process(server)
        log.close()
    pixels = processor(images=images)["pixel_values"]
    tokens = processor(text=LABELS, padding=True)
    expected = np.asarray(model(pixel_values=pixels, **tokens)["logits_per_image"])
    expected = tf.nn.softmax(expected, axis=-1).numpy()
    assert list(served.argmax(1)) == list(expected.argmax(1)) == [1, 2, 0, 3]
    if precision == "float32":
        np.testing.assert_allclose(served, expected, atol=1e-5)
    else:
        np.testing.assert_allclose(served, expected, atol=0.02)
        assert np.abs(served - expected).max() > 0  # computed in bfloat16, not float32
