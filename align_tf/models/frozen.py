"""Frozen inference graphs: both towers rebuilt as plain TensorFlow from a snapshot of the
model's weights, taken in the inference precision.

Why (docs/performance.md has the measurements): TensorFlow's oneDNN kernels fuse only the
patterns they know, and the Keras layers' graph hides some of them.
- BatchNorm folded into each convolution's kernel and bias once, at snapshot time, instead of
  per-channel post-ops on every output: conv + bias + swish and project conv + bias + residual
  add each run as one kernel. Under oneDNN on a CPU the depthwise convs are grouped Conv2Ds, so
  that they fuse bias + swish too; everywhere else (oneDNN off, GPUs, and every SavedModel,
  which must run in any TensorFlow runtime: TF Serving's standard build has no oneDNN) they stay
  DepthwiseConv2dNative, as TensorFlow's own fused-conv kernels refuse grouped convolutions.
- Weights stored in bfloat16 / float16 under a mixed-precision policy, so no cast of 172M
  parameters on every call (the Keras graph casts its float32 variables each time).
- Text: Q, K and V as one matmul, matmul + bias + exact GELU and matmul + bias + residual as
  one kernel each, and the last layer run for the [CLS] row only (the only row the
  projection reads: its queries, attention output and feed-forward skip the other rows).
- Squeeze-excite and LayerNorm statistics stay in float32 in every precision.

The snapshot is one eager tensor per weight, captured by the traced functions (see
`_constant`). It belongs to the weights it was taken from: `AlignModel` drops its graphs when
its weights change through Keras (`load_weights`, `set_weights`, checkpoint loading, `fit` and
anything else that steps `model.optimizer`), see `weights_token`. After assigning variables by
hand, call `model.reset_inference_graphs()`, or set `model.frozen_inference = False` to run
the Keras layers' graph instead (same numbers within float rounding, slower).

TensorFlow backend only; training never comes here.
"""

from __future__ import annotations

import math
import platform

import numpy as np
import tensorflow as tf

from align_tf.models.activations import activation
from align_tf.models.efficientnet import implicit_padding

SWISH = ("swish", "silu")


def weights_token(model) -> tuple:
    """Changes whenever the model's weights may have changed through Keras: a counter that
    `load_weights` / `set_weights` / `reset_inference_graphs` step, and the optimizer's step."""
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    step = int(iterations.numpy()) if iterations is not None else None
    return model.__dict__.get("_weights_generation", 0), step


def _host(variable) -> np.ndarray:
    return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable, dtype=np.float32)


def _constant(array, dtype: tf.DType):
    """An eager tensor in `dtype`, made once when the graph function is built: traced functions
    capture it (one copy in memory, fed to every call; a SavedModel stores it as a constant).
    Const nodes made inside the trace would cost ~15 copies of the weights in TF's function
    library, graph optimiser and executor (measured: +6.5 GiB for align-base's text tower)."""
    with tf.init_scope():
        return tf.constant(np.asarray(array, np.float32).astype(tf.as_dtype(dtype).as_numpy_dtype))


def _constants(arrays, dtype):
    return tuple(_constant(a, dtype) for a in arrays)


def _activate(y, name: str):
    if name in SWISH:
        return y * tf.sigmoid(y)  # the pattern TF fuses into the preceding conv
    return activation(name)(y)


# -- image tower ------------------------------------------------------------------------------
def onednn_grouped_depthwise() -> bool:
    """Whether this process's inference graphs may run depthwise convs as grouped Conv2D: only
    on an x86 CPU with oneDNN on (TF_ENABLE_ONEDNN_OPTS). oneDNN fuses grouped Conv2D + bias +
    swish, where it fuses DepthwiseConv2dNative with ReLU-like activations only; TensorFlow's
    own fused-conv kernel (oneDNN off) refuses grouped convolutions, and neither GPUs nor ARM's
    oneDNN build are measured."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        from tensorflow.python.util import _pywrap_util_port
        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return False
    return onednn and not tf.config.list_logical_devices("GPU")


def _folded(conv, bn, grouped: bool = False):
    """(kernel, bias) of conv followed by inference BatchNorm; with `grouped`, depthwise kernels
    as the [kh, kw, 1, C] filter of a grouped Conv2D (see onednn_grouped_depthwise)."""
    scale = _host(bn.gamma) / np.sqrt(_host(bn.moving_variance) + bn.epsilon)
    bias = _host(bn.beta) - _host(bn.moving_mean) * scale
    kernel = _host(conv.kernel)
    if conv.__class__.__name__ == "DepthwiseConv2D":
        kernel = kernel * scale[None, None, :, None]
        return (np.transpose(kernel, (0, 1, 3, 2)) if grouped else kernel), bias
    return kernel * scale, bias


def _stride2_padding(x, pad_layer, kernel_size):
    """(input, padding) for a stride-2 conv after the reference's explicit zero padding: the
    conv's own padding when it reads the same pixels (static sizes), else an explicit Pad."""
    (top, bottom), (left, right) = pad_layer.padding
    modes = {implicit_padding(x.shape[1], (top, bottom), kernel_size),
             implicit_padding(x.shape[2], (left, right), kernel_size)}
    if len(modes) == 1 and None not in modes:
        return x, modes.pop().upper()
    return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]]), "VALID"


def image_features_graph(vision_model, dtype="float32", grouped_depthwise: bool = False):
    """pixel_values [N, H, W, 3] float32 -> pooled features [N, D] float32, as a Python
    function to trace (static H and W pad implicitly, as in align_tf.models.compiled).
    `grouped_depthwise`: depthwise convs as grouped Conv2D, for oneDNN on a CPU only
    (onednn_grouped_depthwise); the default graph runs in any TensorFlow runtime."""
    dtype = tf.as_dtype(dtype)
    config = vision_model.config
    act = config.hidden_act
    emb = vision_model.embeddings
    stem = _constants(_folded(emb.convolution, emb.batchnorm), dtype)
    blocks = []
    for block in vision_model.blocks:
        se = block.squeeze_excite
        blocks.append(dict(
            block=block,
            expand=(_constants(_folded(block.expand_conv, block.expand_bn), dtype)
                    if block.expand else None),
            depthwise=_constants(_folded(block.depthwise_conv, block.depthwise_norm,
                                         grouped_depthwise), dtype),
            # Squeeze-excite on the pooled [N, 1, 1, C] vector in float32 whatever the precision
            # (negligible work; in bfloat16 its gates cost the most agreement with float32).
            reduce=_constants((_host(se.reduce.kernel), _host(se.reduce.bias)), tf.float32),
            excite=_constants((_host(se.expand.kernel), _host(se.expand.bias)), tf.float32),
            project=_constants(_folded(block.project_conv, block.project_bn), dtype)))

    def conv(x, kernel_bias, stride=1, padding="VALID"):
        kernel, bias = kernel_bias
        return tf.nn.bias_add(tf.nn.conv2d(x, kernel, stride, padding), bias)

    def depthwise(x, kernel_bias, stride, padding):
        if grouped_depthwise:
            return conv(x, kernel_bias, stride, padding)
        kernel, bias = kernel_bias
        return tf.nn.bias_add(tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], padding), bias)

    def features(pixel_values):
        x = tf.cast(pixel_values, dtype)
        x, padding = _stride2_padding(x, emb.padding, 3)
        x = _activate(conv(x, stem, 2, padding), act)
        for b in blocks:
            block, inputs = b["block"], x
            if b["expand"] is not None:
                x = _activate(conv(x, b["expand"]), act)
            padding = "SAME"
            if block.stride == 2:
                x, padding = _stride2_padding(x, block.depthwise_conv_pad, block.kernel_size)
            x = _activate(depthwise(x, b["depthwise"], block.stride, padding), act)
            s = tf.cast(tf.reduce_mean(x, axis=(1, 2), keepdims=True), tf.float32)
            s = tf.sigmoid(conv(_activate(conv(s, b["reduce"]), act), b["excite"]))
            x = conv(x * tf.cast(s, dtype), b["project"])
            if block.apply_residual:
                x = x + inputs  # fused into the project conv (same static shapes)
        pool = tf.reduce_mean if config.pooling_type == "mean" else tf.reduce_max
        return pool(tf.cast(x, tf.float32), axis=(1, 2))

    return features


# -- text tower -------------------------------------------------------------------------------
def _dense(layer):
    return _host(layer.kernel), _host(layer.bias)


def _dense_constants(layer, dtype):
    return _constants(_dense(layer), dtype)


def _norm(layer):
    return _constants((_host(layer.gamma), _host(layer.beta)), tf.float32)  # float32 statistics


def text_features_graph(model, dtype="float32"):
    """(input_ids, attention_mask, token_type_ids) int32 [M, L] -> projected [CLS] features
    [M, D] float32 (no padding trimming here: align_tf.models.compiled trims first)."""
    dtype = tf.as_dtype(dtype)
    text = model.text_model
    config = text.config
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim, eps = hidden // heads, config.layer_norm_eps
    emb = text.embeddings
    word, position, token_type = (_constant(_host(e.embeddings), dtype) for e in (
        emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings))
    layers = []
    for layer in text.encoder_layers:
        q, k, v = _dense(layer.query), _dense(layer.key), _dense(layer.value)
        layers.append(dict(
            qkv=_constants((np.concatenate([q[0], k[0], v[0]], 1), np.concatenate([q[1], k[1], v[1]])), dtype),
            attention_output=_dense_constants(layer.attention_output_dense, dtype),
            attention_norm=_norm(layer.attention_output_LayerNorm),
            intermediate=_dense_constants(layer.intermediate_dense, dtype),
            output=_dense_constants(layer.output_dense, dtype),
            output_norm=_norm(layer.output_LayerNorm)))
    projection = _dense_constants(model.text_projection, dtype)
    embedding_norm = _norm(emb.LayerNorm)
    act = config.hidden_act

    def dense(x, kernel_bias):
        return tf.nn.bias_add(tf.matmul(x, kernel_bias[0]), kernel_bias[1])

    def layer_norm(x, gamma_beta):
        # Float32 statistics in every precision, two passes as Keras computes them. (Written so
        # that TF's oneDNN LayerNorm fusion does not match: that kernel ignores the epsilon.)
        x = tf.cast(x, tf.float32)
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) * tf.math.rsqrt(variance + eps) * gamma_beta[0] + gamma_beta[1]
        return tf.cast(y, dtype)

    def intermediate(x, kernel_bias):
        y = dense(x, kernel_bias)
        if act in ("gelu", "gelu_python"):  # the form TF fuses as matmul + bias + GeluExact
            return ((tf.math.erf(y * (1.0 / math.sqrt(2.0))) + 1.0) * 0.5) * y
        return activation(act)(y)

    def features(input_ids, attention_mask, token_type_ids):
        batch, length = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        x = tf.gather(word, input_ids) + tf.gather(token_type, token_type_ids) + position[None, :length]
        x = layer_norm(tf.reshape(x, (-1, hidden)), embedding_norm)
        # Additive mask in float32, as the Keras layer adds it (exact -1e9 under bfloat16).
        bias = tf.reshape((1.0 - tf.cast(attention_mask, tf.float32)) * -1e9, (batch, 1, 1, length))

        def split_heads(t):
            return tf.transpose(tf.reshape(t, (batch, -1, heads, head_dim)), (0, 2, 1, 3))

        for i, w in enumerate(layers):
            q, k, v = tf.split(dense(x, w["qkv"]), 3, axis=-1)
            if i == len(layers) - 1:  # only [CLS] is read after the last layer
                q = tf.reshape(q, (batch, length, hidden))[:, :1]
                x = tf.reshape(x, (batch, length, hidden))[:, 0]
            scores = tf.matmul(split_heads(q), split_heads(k), transpose_b=True) * (head_dim ** -0.5)
            probs = tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32) + bias, axis=-1), dtype)
            context = tf.transpose(tf.matmul(probs, split_heads(v)), (0, 2, 1, 3))
            context = tf.reshape(context, tf.shape(x))  # same symbolic shape: residual fuses
            x = layer_norm(dense(context, w["attention_output"]) + x, w["attention_norm"])
            x = layer_norm(dense(intermediate(x, w["intermediate"]), w["output"]) + x, w["output_norm"])
        return tf.cast(dense(x, projection), tf.float32)

    return features
