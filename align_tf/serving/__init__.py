"""Serving: a TF Serving client (gRPC / REST) and a local server that speaks TF Serving's API."""

from align_tf.lazy import lazy_exports

_EXPORTS = {
    "AlignServingClient": "align_tf.serving.client",
    "ServingError": "align_tf.serving.client",
    "encode_images": "align_tf.serving.client",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
