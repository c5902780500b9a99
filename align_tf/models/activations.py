"""The activations a config's `hidden_act` may name (transformers' ACT2FN names), in keras.ops."""

from __future__ import annotations

import math

import keras
from keras import ops

from align_tf.configuration import ACTIVATIONS

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu(x):
    return keras.activations.gelu(x, approximate=False)


def _gelu_tanh(x):  # gelu_new / gelu_pytorch_tanh / gelu_accurate: the tanh approximation
    return 0.5 * x * (1.0 + ops.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


def _gelu_fast(x):
    return 0.5 * x * (1.0 + ops.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def _laplace(x, mu=0.707107, sigma=0.282095):
    return 0.5 * (1.0 + ops.erf((x - mu) / (sigma * math.sqrt(2.0))))


ACTIVATION_FUNCTIONS = {
    "gelu": _gelu,
    "gelu_python": _gelu,
    "gelu_10": lambda x: ops.clip(_gelu(x), -10.0, 10.0),
    "gelu_fast": _gelu_fast,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "quick_gelu": lambda x: x * ops.sigmoid(1.702 * x),
    "hardswish": lambda x: x * ops.relu6(x + 3.0) / 6.0,
    "laplace": _laplace,
    "leaky_relu": lambda x: ops.leaky_relu(x, negative_slope=0.01),
    "linear": lambda x: x,
    "mish": lambda x: x * ops.tanh(ops.softplus(x)),
    "relu": ops.relu,
    "relu2": lambda x: ops.square(ops.relu(x)),
    "relu6": ops.relu6,
    "sigmoid": ops.sigmoid,
    "silu": keras.activations.silu,
    "swish": keras.activations.silu,
    "selu": ops.selu,
    "sqrtsoftplus": lambda x: ops.sqrt(ops.softplus(x)),
    "tanh": ops.tanh,
}
assert set(ACTIVATION_FUNCTIONS) == set(ACTIVATIONS), set(ACTIVATION_FUNCTIONS) ^ set(ACTIVATIONS)


def activation(name: str):
    """The function for a `hidden_act` name (validated by the config already)."""
    return ACTIVATION_FUNCTIONS[name]
