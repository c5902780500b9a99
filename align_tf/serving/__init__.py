"""Serving: a TF Serving client (gRPC / REST) and a local server that speaks TF Serving's API."""

import importlib

_EXPORTS = {
    "AlignServingClient": "align_tf.serving.client",
    "ServingError": "align_tf.serving.client",
    "encode_images": "align_tf.serving.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'align_tf.serving' has no attribute {name!r}")
