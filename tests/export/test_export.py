"""SavedModel export: every signature equals the Keras model, loads through the TF1 loader and
saved_model_cli, and the op check refuses what stock TF Serving cannot run."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops for loading)

from support import LABELS, encoded_images, minilm_folder, tiny_model, tiny_processor

from align_tf import export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, processor = tiny_model(), tiny_processor()
    base = str(tmp_path_factory.mktemp("saved_models") / "align")
    path = export.export_saved_model(model, processor, base)
    return model, processor, path


@pytest.fixture(scope="module")
def signatures(exported):
    return tf.saved_model.load(exported[2]).signatures


def keras_reference(model, processor, images, texts):
    pixel_values = processor.image_processor.preprocess_bytes(tf.constant(images))
    tokens = processor.tokenizer(texts)
    out = model({"pixel_values": pixel_values, **tokens})
    return {k: np.asarray(v) for k, v in out.items()}, np.asarray(pixel_values), tokens


def test_layout_version_and_signature_contract(exported, signatures):
    _, _, path = exported
    assert os.path.basename(path) == "1" and os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert export.next_version(os.path.dirname(path)) == 2
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".")]  # no staging left
    from tensorflow_serving.apis import prediction_log_pb2

    warmup = [prediction_log_pb2.PredictionLog.FromString(r) for r in
              tf.data.TFRecordDataset(os.path.join(path, export.WARMUP_FILE)).as_numpy_iterator()]
    assert [w.predict_log.request.model_spec.signature_name for w in warmup] == \
        ["embed_text", "embed_image", "classify"]
    assert set(export.ALL_SIGNATURES) <= set(signatures)
    expected_inputs = {
        "serving_default": {"image_bytes": (tf.string, [None]), "text": (tf.string, [None])},
        "classify": {"image_bytes": (tf.string, [None]), "text": (tf.string, [None])},
        "embed_text": {"text": (tf.string, [None])},
        "embed_image": {"image_bytes": (tf.string, [None])},
        "embed_pixels": {"pixel_values": (tf.float32, [None, 32, 32, 3])},
        "embed_tokens": {n: (tf.int32, [None, None]) for n in ("input_ids", "attention_mask", "token_type_ids")},
        "similarity": {"image_embeds": (tf.float32, [None, 80]), "text_embeds": (tf.float32, [None, 80])},
    }
    expected_outputs = {"serving_default": {"logits_per_image", "probs"}, "classify": {"logits_per_image", "probs"},
                        "embed_text": {"text_embeds"}, "embed_image": {"image_embeds"},
                        "embed_pixels": {"image_embeds"}, "embed_tokens": {"text_embeds"},
                        "similarity": {"logits_per_image"}}
    for name, inputs in expected_inputs.items():
        fn = signatures[name]
        specs = fn.structured_input_signature[1]
        assert {k: (v.dtype, v.shape.as_list()) for k, v in specs.items()} == inputs, name
        outputs = fn.structured_outputs
        assert set(outputs) == expected_outputs[name], name
        assert all(o.dtype == tf.float32 for o in outputs.values()), name


def test_every_signature_equals_the_keras_model(exported, signatures):
    model, processor, _ = exported
    images = encoded_images()
    ref, pixel_values, tokens = keras_reference(model, processor, images, LABELS)
    sig = signatures

    classify = sig["classify"](image_bytes=tf.constant(images), text=tf.constant(LABELS))
    np.testing.assert_allclose(classify["logits_per_image"], ref["logits_per_image"], atol=1e-5)
    probs = np.exp(ref["logits_per_image"]) / np.exp(ref["logits_per_image"]).sum(-1, keepdims=True)
    np.testing.assert_allclose(classify["probs"], probs, atol=1e-5)
    default = sig["serving_default"](image_bytes=tf.constant(images), text=tf.constant(LABELS))
    np.testing.assert_allclose(default["logits_per_image"], ref["logits_per_image"], atol=1e-5)

    text = sig["embed_text"](text=tf.constant(LABELS))["text_embeds"]
    np.testing.assert_allclose(text, ref["text_embeds"], atol=1e-5)
    image = sig["embed_image"](image_bytes=tf.constant(images))["image_embeds"]
    np.testing.assert_allclose(image, ref["image_embeds"], atol=1e-5)
    pixels = sig["embed_pixels"](pixel_values=tf.constant(pixel_values))["image_embeds"]
    np.testing.assert_allclose(pixels, ref["image_embeds"], atol=1e-5)

    # Pre-tokenized input of another length (padding="longest") and with padded rows.
    from align_tf.preprocessing.tokenizer import AlignTokenizer

    longest = AlignTokenizer(os.path.join(minilm_folder(), "vocab.txt"), padding="longest")(LABELS)
    tokens_ref = np.asarray(model(longest)["text_embeds"])
    tokens_out = sig["embed_tokens"](**{k: tf.constant(v) for k, v in longest.items()})["text_embeds"]
    np.testing.assert_allclose(tokens_out, tokens_ref, atol=1e-5)
    np.testing.assert_allclose(tokens_ref, ref["text_embeds"], atol=1e-5)  # padding does not matter

    # similarity: cosine / temperature, computed here by hand from the Keras embeddings.
    logits = sig["similarity"](image_embeds=tf.constant(ref["image_embeds"]),
                               text_embeds=tf.constant(ref["text_embeds"]))["logits_per_image"]
    np.testing.assert_allclose(logits, ref["image_embeds"] @ ref["text_embeds"].T / 0.37, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text, axis=-1), 1.0, atol=1e-5)


def test_bad_input_is_an_invalid_argument_error(signatures):
    sig = signatures
    with pytest.raises(tf.errors.InvalidArgumentError, match="text: empty batch"):
        sig["embed_text"](text=tf.constant([], tf.string))
    with pytest.raises(tf.errors.InvalidArgumentError):
        sig["embed_image"](image_bytes=tf.constant([b"<html>not an image</html>"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="vocab_size"):
        ids = tf.constant([[101, 40000, 102]], tf.int32)
        sig["embed_tokens"](input_ids=ids, attention_mask=tf.ones_like(ids), token_type_ids=tf.zeros_like(ids))


def test_tf1_session_loader_runs_signatures_by_tensor_name(exported, signatures):
    """The path TF Serving's C++ loader takes: a graph, a session, feeds and fetches by name."""
    _, _, path = exported
    images = encoded_images()[:2]
    expected = signatures["classify"](image_bytes=tf.constant(images), text=tf.constant(LABELS))
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        signature = meta_graph.signature_def["classify"]
        feeds = {signature.inputs["text"].name: LABELS, signature.inputs["image_bytes"].name: images}
        fetches = {k: v.name for k, v in signature.outputs.items()}
        result = session.run(fetches, feed_dict=feeds)
    assert set(result) == {"logits_per_image", "probs"}
    np.testing.assert_allclose(result["logits_per_image"], expected["logits_per_image"], atol=1e-5)
    np.testing.assert_allclose(result["probs"], expected["probs"], atol=1e-5)


def test_saved_model_cli_lists_every_signature(exported, capsys):
    # What `saved_model_cli show --dir PATH --all` runs, in-process (a subprocess would import
    # TensorFlow again for ~10 s).
    from tensorflow.python.tools import saved_model_cli

    saved_model_cli._show_all(exported[2])
    out = capsys.readouterr().out
    for name in export.ALL_SIGNATURES:
        assert f"signature_def['{name}']" in out
    assert "dtype: DT_STRING" in out and "shape: (-1, 32, 32, 3)" in out


def test_op_check_allows_only_serving_text_ops(exported):
    _, _, path = exported
    found = export.check_serving_ops(path)
    assert found == sorted(export.non_core_ops(path))
    assert "FastWordpieceTokenizeWithOffsets" in found  # the tokenizer is in the graph
    assert set(found) <= export.SERVING_TEXT_OPS
    assert not export.xla_functions(path)
    # What is "core" is TensorFlow's own op list, which never contains tf-text ops.
    assert "MatMul" in export.core_op_names() and "NormalizeUTF8" not in export.core_op_names()


def _save_module(path, fn, signature):
    module = tf.Module()
    module.f = tf.function(fn, input_signature=signature)
    tf.saved_model.save(module, path)
    return path


def test_op_check_refuses_round_robin_trim(tmp_path):
    import tensorflow_text as tf_text

    def trim(ids):
        return tf_text.RoundRobinTrimmer(max_seq_length=4).trim([ids, ids])[0].to_tensor()

    path = _save_module(str(tmp_path / "rr"), trim, [tf.RaggedTensorSpec([None, None], tf.int32)])
    with pytest.raises(export.UnsupportedOpError, match="RoundRobinTrim") as info:
        export.check_serving_ops(path)
    assert info.value.op == "TFText>RoundRobinTrim"


def test_op_check_refuses_an_op_added_to_the_graph(tmp_path):
    path = _save_module(str(tmp_path / "plain"), lambda x: {"y": x * 2.0}, [tf.TensorSpec([None], tf.float32)])
    assert export.check_serving_ops(path) == []
    proto = export.read_saved_model_proto(path)
    function = proto.meta_graphs[0].graph_def.library.function[0]
    node = function.node_def.add()
    node.name, node.op = "smuggled", "MyCompanyCustomOp"
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(proto.SerializeToString())
    with pytest.raises(export.UnsupportedOpError, match="'MyCompanyCustomOp'.*neither a TensorFlow core op"):
        export.check_serving_ops(path)


def test_op_check_refuses_xla_functions(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: x + 1.0, input_signature=[tf.TensorSpec([None], tf.float32)],
                           jit_compile=True)
    tf.saved_model.save(module, str(tmp_path / "xla"))
    with pytest.raises(export.XlaFunctionError, match="XLA"):
        export.check_serving_ops(str(tmp_path / "xla"))


def test_export_refuses_a_graph_with_a_disallowed_op_and_leaves_no_version(tmp_path, monkeypatch):
    import tensorflow_text as tf_text

    model, processor = tiny_model(), tiny_processor()
    # Only the extra endpoint, to keep the test fast; export_saved_model runs the same check.
    monkeypatch.setattr(export, "serving_functions", lambda *args: {})
    trim = tf.function(lambda ids: {"ids": tf_text.RoundRobinTrimmer(4).trim([ids, ids])[0].to_tensor()},
                       input_signature=[tf.RaggedTensorSpec([None, None], tf.int32)])
    base = str(tmp_path / "align")
    with pytest.raises(export.UnsupportedOpError, match="RoundRobinTrim"):
        export.export_saved_model(model, processor, base, extra_functions={"trim": trim})
    assert os.listdir(base) == []


def test_mixed_precision_model_gives_float32_outputs():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.dtype_policy.compute_dtype == "float16"
    # The tower computes in float16; the compiled in-process path, like the export, gives float32.
    assert model.vision_model(tf.zeros([1, 32, 32, 3]))["pooler_output"].dtype == tf.float16
    assert model.get_image_features(tf.zeros([1, 32, 32, 3])).dtype == tf.float32
    # The image side only: the text tower does not run under mixed_float16 yet (bert.py).
    functions = export.serving_functions(model, tiny_processor())
    for name in ("embed_pixels", "embed_image", "similarity"):
        outputs = functions[name].get_concrete_function().structured_outputs
        assert all(o.dtype == tf.float32 for o in outputs.values()), name
    image = functions["embed_image"](tf.constant(encoded_images()))["image_embeds"].numpy()
    assert image.dtype == np.float32 and image.shape == (3, 80)
    np.testing.assert_allclose(np.linalg.norm(image, axis=-1), 1.0, atol=1e-3)


def test_load_saved_model_helper_and_tfsmlayer(exported, tmp_path):
    import keras

    model, processor, path = exported
    images = encoded_images()
    ref, _, _ = keras_reference(model, processor, images, LABELS)
    loaded = export.load_saved_model(os.path.dirname(path))  # base path: its newest version
    assert loaded.version == 1
    np.testing.assert_allclose(loaded.embed_text(LABELS), ref["text_embeds"], atol=1e-5)
    image_file = tmp_path / "image.png"
    image_file.write_bytes(images[1])
    mixed = loaded.embed_image([images[0], str(image_file)])  # bytes and a path
    np.testing.assert_allclose(mixed, ref["image_embeds"][:2], atol=1e-5)
    scores = loaded.classify(images, LABELS)
    np.testing.assert_allclose(scores["logits_per_image"], ref["logits_per_image"], atol=1e-5)

    # TFSMLayer inside a Keras model: string in, a trainable head on the frozen embedding.
    text_in = keras.Input(shape=(), dtype="string", name="text")
    embeds = keras.layers.TFSMLayer(path, call_endpoint="embed_text")(text_in)["text_embeds"]
    head = keras.Model(text_in, keras.layers.Dense(2, name="head")(embeds))
    out = head(tf.constant(LABELS))
    dense = head.get_layer("head")
    np.testing.assert_allclose(out, ref["text_embeds"] @ dense.kernel.numpy() + dense.bias.numpy(), atol=1e-5)
