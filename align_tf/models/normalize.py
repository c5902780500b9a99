"""The one L2 normalisation of align-tf: the reference's `x / x.norm(dim=-1)`, in float32.

Numpy arrays stay numpy (the applications: zero-shot, search, embedding corpora) without loading
Keras; anything else (TF / JAX tensors, symbolic tensors in exported graphs) goes through
`keras.ops`. The 1e-12 floor only changes all-zero rows (NaN in the reference)."""

from __future__ import annotations

import numpy as np

EPSILON = 1e-12


def l2_normalize(x):
    """Each row of `x` [..., D] divided by its L2 norm, as float32."""
    if isinstance(x, (np.ndarray, np.generic, list, tuple)):
        x = np.asarray(x, np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPSILON)
    from keras import ops

    x = ops.cast(x, "float32")
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)), EPSILON)
