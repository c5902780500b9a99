"""The one L2 normalisation: numpy in, numpy out without loading Keras (the applications' side);
tensors through keras.ops (the model and the exported graphs); both equal the reference formula."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from support import REPO_ROOT

from align_tf.models.normalize import l2_normalize


def test_numpy_and_tensor_paths_equal_the_reference_formula():
    import tensorflow as tf

    x = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float16)
    expected = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=-1, keepdims=True)
    as_numpy = l2_normalize(x)
    as_tensor = l2_normalize(tf.constant(x))
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    assert isinstance(as_tensor, tf.Tensor) and as_tensor.dtype == tf.float32
    np.testing.assert_allclose(as_numpy, expected, atol=1e-6)
    np.testing.assert_allclose(as_tensor.numpy(), expected, atol=1e-6)
    # An all-zero row stays zero (the reference would give NaN); nothing else is changed.
    assert np.all(l2_normalize(np.zeros((1, 3))) == 0)


def test_numpy_path_does_not_load_keras():
    code = ("import sys, numpy as np; from align_tf.models.normalize import l2_normalize; "
            "l2_normalize(np.ones((2, 3))); print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": REPO_ROOT, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
