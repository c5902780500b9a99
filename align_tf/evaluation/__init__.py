"""Zero-shot classification (prompt ensembles), retrieval metrics, evaluation commands."""

import importlib

_EXPORTS = {
    "ZeroShotClassifier": "align_tf.evaluation.zero_shot",
    "zero_shot_classify": "align_tf.evaluation.zero_shot",
    "ensemble_class_embeddings": "align_tf.evaluation.zero_shot",
    "Embedder": "align_tf.evaluation.embedding",
    "load_embedder": "align_tf.evaluation.embedding",
    "retrieval_metrics": "align_tf.evaluation.retrieval",
    "evaluate_retrieval": "align_tf.evaluation.retrieval",
    "read_retrieval_dataset": "align_tf.evaluation.retrieval",
    "classification_metrics": "align_tf.evaluation.classification_metrics",
    "save_confusion_matrix_png": "align_tf.evaluation.classification_metrics",
    "find_images": "align_tf.evaluation.image_files",
    "read_class_folders": "align_tf.evaluation.image_files",
    "SINGLE_TEMPLATE": "align_tf.evaluation.templates",
    "IMAGENET_TEMPLATES": "align_tf.evaluation.templates",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'align_tf.evaluation' has no attribute {name!r}")


def __dir__():
    return __all__
