"""The library's applications, built on the model and the preprocessing: embedding images and
texts in batches, zero-shot classification with prompt ensembles, and the embedding index."""

from align_tf.lazy import lazy_exports

_EXPORTS = {
    "Embedder": "align_tf.applications.embedder",
    "load_embedder": "align_tf.applications.embedder",
    "l2_normalize": "align_tf.applications.embedder",
    "ZeroShotClassifier": "align_tf.applications.zero_shot",
    "zero_shot_classify": "align_tf.applications.zero_shot",
    "ensemble_class_embeddings": "align_tf.applications.zero_shot",
    "EmbeddingIndex": "align_tf.applications.search",
    "find_images": "align_tf.applications.image_files",
    "read_class_folders": "align_tf.applications.image_files",
    "SINGLE_TEMPLATE": "align_tf.applications.templates",
    "IMAGENET_TEMPLATES": "align_tf.applications.templates",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
