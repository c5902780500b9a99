"""The image tower's TensorFlow fast paths (align_tf/models/efficientnet.py `conv_bn`):

- inference: Conv2D -> FusedBatchNormV3 -> x*sigmoid(x), which TF's oneDNN rewrite must turn
  into ONE fused kernel (the speed and memory of the inference path depend on it);
- training: Keras BatchNormalization semantics computed by FusedBatchNormV3 and its gradient.

Each is checked against an independent result: Keras's own BatchNormalization layer, and the
reference transformers model in training mode (forward and every gradient).
"""

import platform

import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from align_tf.models.align import AlignModel
from align_tf.models.efficientnet import AlignVisionModel, conv_bn
from layer_checks import executed_kernels
from support import pixel_batch, save_hf_checkpoint, tiny_align_config, tiny_vision_config


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN rewrites are x86 CPU only")
def test_inference_runs_conv_batchnorm_swish_as_one_fused_kernel():
    config = tiny_vision_config()
    model = AlignVisionModel(config)
    model.build()
    fn = tf.function(lambda x: model(x)["pooler_output"])
    nodes = executed_kernels(fn, tf.constant(pixel_batch(2, 64)))
    fused = [f for op, f in nodes if "FusedConv2D" in op]
    with_swish = [f for f in fused if f == ("FusedBatchNorm", "_MklSwish")]
    # Stem + every expand conv: Conv2D, BatchNorm and swish in one kernel.
    expanding = sum(1 for block in model.blocks if block.expand)
    assert len(with_swish) == 1 + expanding, (len(with_swish), expanding, sorted(set(nodes)))
    # Project convs: Conv2D + BatchNorm in one kernel (no activation after them).
    assert sum(1 for f in fused if f == ("FusedBatchNorm",)) == len(model.blocks)
    # Depthwise convs: folded BatchNorm as a fused bias.
    depthwise = [f for op, f in nodes if "DepthwiseConv2dNative" in op]
    assert len(depthwise) == len(model.blocks) and all(f == ("BiasAdd",) for f in depthwise)
    # No standalone BatchNorm left; standalone swish only after each depthwise conv and inside
    # each squeeze-excite (1x1 spatial, negligible).
    assert not [op for op, _ in nodes if "FusedBatchNorm" in op]
    assert sum(1 for op, _ in nodes if op == "_MklSwish") == 2 * len(model.blocks)


@pytest.mark.parametrize("depthwise", [False, True])
def test_training_batch_norm_equals_keras_layer(depthwise):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, 9, 7, 6)).astype(np.float32))
    pairs = []
    for _ in range(2):
        conv = (layers.DepthwiseConv2D(3, padding="same", use_bias=False) if depthwise
                else layers.Conv2D(5, 3, padding="same", use_bias=False))
        bn = layers.BatchNormalization(epsilon=1e-3, momentum=0.9)
        conv.build(x.shape)
        bn.build(conv.compute_output_shape(x.shape))
        pairs.append((conv, bn))
    (conv_a, bn_a), (conv_b, bn_b) = pairs
    for a, b in zip(conv_a.weights + bn_a.weights, conv_b.weights + bn_b.weights):
        value = rng.normal(size=a.shape).astype(np.float32)
        if "variance" in a.path or "gamma" in a.path:
            value = np.abs(value) + 0.5
        a.assign(value)
        b.assign(value)
    initial_mean = bn_a.moving_mean.numpy()
    upstream = tf.constant(rng.normal(size=bn_a.compute_output_shape(conv_a.compute_output_shape(x.shape))).astype(np.float32))

    def run(fn, variables):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn()
            loss = tf.reduce_sum(y * upstream)
        return y, tape.gradient(loss, [x] + variables)

    fast, fast_grads = run(lambda: conv_bn(x, conv_a, bn_a, training=True, fold=True),
                           [conv_a.kernel, bn_a.gamma, bn_a.beta])
    keras_out, keras_grads = run(lambda: bn_b(conv_b(x), training=True),
                                 [conv_b.kernel, bn_b.gamma, bn_b.beta])
    np.testing.assert_allclose(fast, keras_out, atol=2e-5)
    for g_fast, g_keras in zip(fast_grads, keras_grads):
        np.testing.assert_allclose(g_fast, g_keras, atol=2e-4, rtol=1e-4)
    # Moving statistics: Keras's momentum and Keras's (biased) batch variance.
    np.testing.assert_allclose(bn_a.moving_mean.numpy(), bn_b.moving_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(bn_a.moving_variance.numpy(), bn_b.moving_variance.numpy(), atol=1e-6)
    assert np.abs(bn_a.moving_mean.numpy() - initial_mean).max() > 1e-3  # the update ran


def test_training_step_matches_reference_in_train_mode(tmp_path):
    """Forward in training mode (batch statistics) and every gradient of the image tower equal
    the reference's `train()` mode (drop-connect off, so both are deterministic)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from align_tf.checkpoints.convert import TO_HF, weight_table
    from support import hf_align_model

    config = tiny_align_config(vision_config=tiny_vision_config(drop_connect_rate=0.0))
    reference = hf_align_model(config, seed=3)
    model = AlignModel.from_pretrained(save_hf_checkpoint(reference, str(tmp_path)))
    pixels = pixel_batch(3, 64, seed=5)
    rng = np.random.default_rng(1)

    ref_vision = reference.vision_model.train()
    ref_out = ref_vision(pixel_values=torch.tensor(pixels).permute(0, 3, 1, 2)).last_hidden_state
    weights = rng.normal(size=tuple(ref_out.permute(0, 2, 3, 1).shape)).astype(np.float32)
    (ref_out.permute(0, 2, 3, 1) * torch.tensor(weights)).sum().backward()

    rows = [(key, var, transform) for key, var, transform in weight_table(model)
            if key.startswith("vision_model.") and var.trainable]
    with tf.GradientTape() as tape:
        out = model.vision_model(pixels, training=True)["last_hidden_state"]
        loss = tf.reduce_sum(out * weights)
    grads = tape.gradient(loss, [var for _, var, _ in rows])

    ref_out_nhwc = ref_out.permute(0, 2, 3, 1).detach().numpy()
    assert np.max(np.abs(out.numpy() - ref_out_nhwc)) < 1e-4 * max(1.0, np.abs(ref_out_nhwc).max())
    params = dict(reference.named_parameters())
    scale = max(float(params[key].grad.abs().max()) for key, _, _ in rows)
    worst = max(float(np.max(np.abs(TO_HF[transform](g.numpy()) - params[key].grad.numpy())))
                for (key, _, transform), g in zip(rows, grads))
    assert len(rows) > 50 and worst < 1e-4 * scale, (worst, scale)


def test_implicit_padding_reads_exactly_what_explicit_padding_reads():
    from align_tf.models.efficientnet import implicit_padding

    def conv1d(x, pad, k, stride=2):
        padded = np.concatenate([np.zeros(pad[0]), x, np.zeros(pad[1])])
        taps = np.arange(1.0, k + 1)
        return np.array([padded[i:i + k] @ taps for i in range(0, len(padded) - k + 1, stride)])

    def tf_mode(x, mode, k, stride=2):
        if mode == "valid":
            return conv1d(x, (0, 0), k, stride)
        out = -(-len(x) // stride)
        total = max((out - 1) * stride + k - len(x), 0)
        return conv1d(x, (total // 2, total - total // 2), k, stride)

    rng = np.random.default_rng(0)
    found = {"same": 0, "valid": 0, None: 0}
    for n in range(3, 80):
        for k in (3, 5):
            for pad in ((k // 2 - 1, k // 2), (k // 2, k // 2)):
                mode = implicit_padding(n, pad, k)
                found[mode] += 1
                if mode:
                    x = rng.normal(size=n)
                    np.testing.assert_allclose(tf_mode(x, mode, k), conv1d(x, pad, k))
    assert min(found.values()) > 20  # every outcome occurs
    # The reference's sizes at 289x289: stem sees 289 (valid), the depthwise convs even sizes.
    assert implicit_padding(289, (0, 1), 3) == "valid"
    assert [implicit_padding(n, (k // 2 - 1, k // 2), k) for n, k in
            ((144, 3), (72, 5), (36, 3), (18, 5))] == ["same"] * 4


def test_compiled_image_features_trace_per_size_without_padding_copies():
    model = AlignModel(tiny_align_config())
    model.build()
    for size in ((64, 64), (65, 50)):
        for batch in (1, 3):
            pixels = pixel_batch(batch, max(size), seed=batch)[:, :size[0], :size[1]]
            fast = model.get_image_features(pixels)
            unfolded = model.vision_model(pixels, fold_batch_norm=False)["pooler_output"]
            np.testing.assert_allclose(fast, unfolded, atol=1e-5)
    cache = model.__dict__["_compiled_image_features"][1]
    cache = {k: v for k, v in cache.items() if isinstance(k, tuple)}
    assert set(cache) == {(64, 64), (65, 50)}  # one trace per size, batch sizes share it
    assert all(fn.experimental_get_tracing_count() == 1 for fn in cache.values())
    ops = [op.type for op in cache[(64, 64)].get_concrete_function().graph.get_operations()]
    assert "Pad" not in ops and "PadV2" not in ops
