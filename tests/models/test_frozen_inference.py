"""Frozen inference graphs (align_tf/models/frozen.py): eager TensorFlow inference runs both
towers from a snapshot of the weights with BatchNorm folded and fused kernels.

Checked against the Keras layers' own graph (`frozen_inference = False`, itself checked against
the reference in test_parity.py), for the kernels TF really runs after its rewrites, for
following every way the weights change, and in reduced precision on the trained demo model.
"""

import platform
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from align_tf.models import compiled, frozen
from align_tf.models.align import AlignModel
from layer_checks import executed_kernels
from support import checkout_env, pixel_batch, text_batch, tiny_align_config

TOKEN_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def random_affine(model, seed=0):
    """Non-zero biases / BatchNorm offsets and non-unit scales everywhere (as trained weights
    have: a zero bias would let the graph optimiser drop an add and hide a folding bug), and
    conv kernels N(0, 1/fan_in) so that the image reaches the features."""
    assert model.built
    rng = np.random.default_rng(seed)

    def draw(w):
        if w.ndim == 1:
            return w + rng.normal(0, 0.05, w.shape).astype(w.dtype)
        if w.ndim == 4:  # [kh, kw, in, out], depthwise [kh, kw, channels, 1]
            fan_in = w.shape[0] * w.shape[1] * (1 if w.shape[3] == 1 else w.shape[2])
            return rng.normal(0, fan_in ** -0.5, w.shape).astype(w.dtype)
        return w

    model.set_weights([draw(w) for w in model.get_weights()])
    # BatchNorm statistics measured on a batch (momentum 0: the batch's own), so activations
    # stay O(1) through every block instead of shrinking towards zero.
    norms = [layer for layer in model.vision_model._flatten_layers()
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model.vision_model(pixel_batch(8, 64, seed=seed + 100), training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    return model


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    m = AlignModel(tiny_align_config())
    m.build()
    return random_affine(m)


def features(model, use_frozen, pixels, tokens):
    model.frozen_inference = use_frozen
    try:
        return (np.asarray(model.get_image_features(pixels)),
                np.asarray(model.get_text_features(**tokens)))
    finally:
        model.frozen_inference = True


@pytest.mark.parametrize("size", [(64, 64), (65, 50)])  # implicit and explicit stride-2 padding
def test_frozen_graphs_equal_the_keras_graph(model, size):
    pixels = pixel_batch(3, max(size), seed=1)[:, :size[0], :size[1]]
    tokens = text_batch(model.config.text_config.vocab_size, lengths=(7, 12, 3), max_len=12)
    image, text = features(model, True, pixels, tokens)
    keras_image, keras_text = features(model, False, pixels, tokens)
    assert image.dtype == text.dtype == np.float32
    np.testing.assert_allclose(image, keras_image, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(text, keras_text, atol=1e-5, rtol=1e-5)
    assert np.abs(image[0] - image[1]).max() > 1e-2  # the images really differ


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN rewrites are x86 CPU only")
def test_frozen_graphs_run_fused_kernels():
    keras.utils.set_random_seed(4)
    m = AlignModel(tiny_align_config())
    m.build()
    random_affine(m)
    blocks = m.vision_model.blocks
    assert frozen.onednn_grouped_depthwise()  # oneDNN on (TensorFlow's default on x86)
    nodes = executed_kernels(compiled.compiled_image_features(m, 64, 64), tf.constant(pixel_batch(2, 64)))
    fused = [f for op, f in nodes if "FusedConv2D" in op]
    # Stem, expand, depthwise and squeeze-excite reduce convs: conv + folded BN + swish as one.
    assert fused.count(("BiasAdd", "_MklSwish")) == 1 + sum(b.expand for b in blocks) + 2 * len(blocks)
    # Project convs with a residual: conv + folded BN + add as one.
    assert fused.count(("BiasAdd", "Add")) == sum(b.apply_residual for b in blocks) > 0
    convs = [op for op, _ in nodes if "Conv" in op]
    assert len(convs) == len(fused)  # no unfused conv, no BatchNorm, no Pad
    assert not [op for op, _ in nodes if "BatchNorm" in op or op.startswith("Pad")]

    tokens = text_batch(m.config.text_config.vocab_size)
    nodes = executed_kernels(compiled.compiled_text_features(m), *[tf.constant(tokens[k]) for k in TOKEN_NAMES])
    layers = m.config.text_config.num_hidden_layers
    matmuls = [f for op, f in nodes if "MatMul" in op and "Batch" not in op]
    assert matmuls.count(("BiasAdd", "GeluExact")) == layers  # feed-forward in
    assert matmuls.count(("BiasAdd", "Add")) == 2 * layers  # attention out, feed-forward out
    assert matmuls.count(("BiasAdd",)) == layers + 1  # fused QKV per layer, the projection
    assert len(matmuls) == 4 * layers + 1
    assert not [op for op, _ in nodes if op == "ReadVariableOp"]  # weights are constants


ONEDNN_OFF = """
import os
import numpy as np
from align_tf.assets import demo_model_path, example_images_path
from align_tf.models import frozen
from align_tf.models.align import AlignModel
from align_tf.preprocessing.processor import AlignProcessor

assert not frozen.onednn_grouped_depthwise()
model = AlignModel.from_pretrained(demo_model_path())
processor = AlignProcessor.from_pretrained(demo_model_path())
folder = example_images_path()
pixels = processor(images=[open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))])
image = np.asarray(model.get_image_features(**pixels))
model.frozen_inference = False
np.testing.assert_allclose(image, np.asarray(model.get_image_features(**pixels)), atol=1e-5, rtol=1e-5)
print("frozen == keras with oneDNN off", image.shape)
"""


def test_frozen_graphs_run_with_onednn_off():
    """TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's own kernels, whose fused conv refuses grouped
    convolutions): the image tower keeps DepthwiseConv2dNative and gives the Keras numbers."""
    env = dict(checkout_env(), TF_ENABLE_ONEDNN_OPTS="0")
    done = subprocess.run([sys.executable, "-c", ONEDNN_OFF], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "frozen == keras with oneDNN off (4, " in done.stdout


def test_frozen_graphs_follow_weight_changes(model, tmp_path):
    pixels = pixel_batch(2, 64, seed=2)
    tokens = text_batch(model.config.text_config.vocab_size, lengths=(5, 9), max_len=9)

    def assert_current():
        for a, b in zip(features(model, True, pixels, tokens), features(model, False, pixels, tokens)):
            assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(b).max())

    original = model.get_weights()
    before = features(model, True, pixels, tokens)
    model.save_weights(str(tmp_path / "w.weights.h5"))
    # set_weights
    model.set_weights([w * 1.1 for w in original])
    after = features(model, True, pixels, tokens)
    assert np.abs(after[0] - before[0]).max() > 1e-3 and np.abs(after[1] - before[1]).max() > 1e-3
    assert_current()
    # load_weights
    model.load_weights(str(tmp_path / "w.weights.h5"))
    for a, b in zip(features(model, True, pixels, tokens), before):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # By hand: the snapshot stays until reset_inference_graphs.
    kernel = model.text_projection.kernel
    kernel.assign(kernel * 2.0)
    np.testing.assert_allclose(features(model, True, pixels, tokens)[1], before[1], atol=1e-6)
    model.reset_inference_graphs()
    bias = model.text_projection.bias.numpy()  # x @ 2K + b = 2 (x @ K + b) - b
    np.testing.assert_allclose(features(model, True, pixels, tokens)[1], 2 * before[1] - bias,
                               rtol=1e-5, atol=1e-5)
    model.set_weights(original)
    # An optimizer step (fit) moves the weights: the next inference sees the new ones.
    model.compile(optimizer=keras.optimizers.SGD(1e-2))
    model.fit({"pixel_values": pixels, **tokens}, epochs=1, batch_size=2, verbose=0)
    assert np.abs(features(model, True, pixels, tokens)[0] - before[0]).max() > 1e-4
    assert_current()
    model.set_weights(original)


# (lowest, median) cosine with float32 over the images and the labels; bfloat16 keeps 8 bits
# of mantissa between layers: a few of 240 images fall to 0.9993 (measured: 12 below 0.9999).
AGREEMENT = {"mixed_bfloat16": (0.999, 0.9999), "mixed_float16": (0.9999, 0.99999)}


@pytest.mark.parametrize("policy", sorted(AGREEMENT))
def test_reduced_precision_keeps_the_demo_models_answers(policy):
    """`from_pretrained(..., dtype=policy)`: frozen graphs in bfloat16 / float16 (bfloat16 is
    faster on CPUs with AVX512_BF16 / AMX, docs/performance.md). Against the float32 model on
    the trained demo model and 240 fresh demo images: cosines as AGREEMENT says for every
    image and label embedding, and the same zero-shot top-1 on every image."""
    from align_tf.assets import demo_model_path
    from align_tf.preprocessing.processor import AlignProcessor
    from align_tf.training.heldout import zero_shot_predictions
    from align_tf.training.inputs import demo_pairs

    processor = AlignProcessor.from_pretrained(demo_model_path())
    full = AlignModel.from_pretrained(demo_model_path())
    half = AlignModel.from_pretrained(demo_model_path(), dtype=policy)
    assert half.vision_model.blocks[0].depthwise_conv.compute_dtype == policy.split("_")[1]
    fresh = demo_pairs(240, seed=123_457, image_size=processor.image_processor.output_size[0])
    pixels = np.asarray(processor.image_processor(list(fresh.images)))
    tokens = processor(text=[f"a photo of a {c}." for c in fresh.class_names], padding=True)
    for a, b in ((full.get_image_features(pixels), half.get_image_features(pixels)),
                 (full.get_text_features(**tokens), half.get_text_features(**tokens))):
        a, b = np.asarray(a), np.asarray(b)
        assert b.dtype == np.float32
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        lowest, median = AGREEMENT[policy]
        assert cosine.min() >= lowest and np.median(cosine) >= median, (cosine.min(), np.median(cosine))
        assert np.abs(a - b).max() > 0  # really reduced precision
    assert zero_shot_predictions(half, processor, fresh) == zero_shot_predictions(full, processor, fresh)
