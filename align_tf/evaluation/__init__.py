"""Evaluation metrics: zero-shot classification accuracy and image-text retrieval recall."""

from align_tf.lazy import lazy_exports

_EXPORTS = {
    "retrieval_metrics": "align_tf.evaluation.retrieval",
    "evaluate_retrieval": "align_tf.evaluation.retrieval",
    "read_retrieval_dataset": "align_tf.evaluation.retrieval",
    "classification_metrics": "align_tf.evaluation.classification_metrics",
    "save_confusion_matrix_png": "align_tf.evaluation.classification_metrics",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
