"""align-tf: ALIGN (EfficientNet + BERT dual encoder) in TensorFlow / Keras 3."""

from align_tf.lazy import lazy_exports

__version__ = "0.1.0"

# Imported lazily so that `align_tf.models` runs under KERAS_BACKEND=jax on machines without
# TensorFlow, and so that `align-tf --help` starts fast.
_EXPORTS = {
    "AlignConfig": "align_tf.configuration",
    "AlignTextConfig": "align_tf.configuration",
    "AlignVisionConfig": "align_tf.configuration",
    "AlignModel": "align_tf.models.align",
    "AlignTextModel": "align_tf.models.bert",
    "AlignVisionModel": "align_tf.models.efficientnet",
    "AlignTokenizer": "align_tf.preprocessing.tokenizer",
    "AlignImageProcessor": "align_tf.preprocessing.image",
    "AlignProcessor": "align_tf.preprocessing.processor",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
