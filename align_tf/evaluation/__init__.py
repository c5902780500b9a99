"""Evaluation metrics: zero-shot classification accuracy and image-text retrieval recall."""

import importlib

_EXPORTS = {
    "retrieval_metrics": "align_tf.evaluation.retrieval",
    "evaluate_retrieval": "align_tf.evaluation.retrieval",
    "read_retrieval_dataset": "align_tf.evaluation.retrieval",
    "classification_metrics": "align_tf.evaluation.classification_metrics",
    "save_confusion_matrix_png": "align_tf.evaluation.classification_metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'align_tf.evaluation' has no attribute {name!r}")


def __dir__():
    return __all__
