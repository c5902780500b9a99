"""Zero-shot classification: embed every class with every prompt template once (prompt
ensembling), then classify image batches with one matrix product."""

from __future__ import annotations

import functools

import numpy as np

from align_tf.applications.embedder import Embedder, l2_normalize, load_embedder
from align_tf.applications.templates import SINGLE_TEMPLATE, resolve_templates
from align_tf.errors import ConfigError


def class_prompts(class_names, templates) -> list[str]:
    """Class-major prompts: every template for class 0, then every template for class 1, ..."""
    return [template.format(name) for name in class_names for template in templates]


def ensemble_class_embeddings(prompt_embeds, num_classes: int) -> np.ndarray:
    """[C * T, D] class-major prompt embeddings -> [C, D]: normalise each prompt embedding,
    average per class, normalise again (CLIP's / ALIGN's prompt ensembling)."""
    prompt_embeds = l2_normalize(prompt_embeds)
    per_class = prompt_embeds.reshape(num_classes, -1, prompt_embeds.shape[-1]).mean(axis=1)
    return l2_normalize(per_class)


def softmax(logits, axis=-1) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    logits = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


class ZeroShotClassifier:
    """`ZeroShotClassifier(model, processor, class_names, templates=...)`.

    `templates`: "single" (`"a photo of {}."`), "imagenet" (the 80 CLIP/ALIGN ImageNet
    prompts), one template string, or a list. The class matrix is computed on first use and
    kept: classifying any number of images embeds the class prompts once. `model` may also be an
    `Embedder` (then `processor` is not needed).
    """

    def __init__(self, model, processor=None, class_names=(), templates=SINGLE_TEMPLATE,
                 batch_size: int = 32, progress=False):
        self.embedder = model if isinstance(model, Embedder) else Embedder(
            model, processor, batch_size=batch_size)
        self.class_names = [str(name) for name in class_names]
        if not self.class_names:
            raise ConfigError("class_names: expected at least one class name")
        if len(set(self.class_names)) != len(self.class_names):
            duplicates = sorted({n for n in self.class_names if self.class_names.count(n) > 1})
            raise ConfigError(f"class_names: duplicate names {duplicates}")
        self.templates = resolve_templates(templates)
        self.batch_size = batch_size
        self.progress = progress
        self._class_embeds = None

    @property
    def class_embeds(self) -> np.ndarray:
        """[C, D] ensembled, normalised class embeddings (computed once)."""
        if self._class_embeds is None:
            prompts = class_prompts(self.class_names, self.templates)
            embeds = self.embedder.embed_texts(prompts, batch_size=self.batch_size,
                                               progress=self.progress, desc="class prompts")
            self._class_embeds = ensemble_class_embeddings(embeds, len(self.class_names))
        return self._class_embeds

    def embed_images(self, images) -> np.ndarray:
        return self.embedder.embed_images(images, batch_size=self.batch_size,
                                          progress=self.progress, desc="images")

    def logits(self, images=None, image_embeds=None) -> np.ndarray:
        """[N, C] cosine similarity / the model's temperature (as `logits_per_image`)."""
        if image_embeds is None:
            image_embeds = self.embed_images(images)
        return l2_normalize(image_embeds) @ self.class_embeds.T / self.embedder.temperature

    def probabilities(self, images=None, image_embeds=None) -> np.ndarray:
        return softmax(self.logits(images, image_embeds))

    def __call__(self, images=None, top_k: int | None = None, image_embeds=None):
        """Per image, a list of `{"label", "score"}` sorted by score (softmax over classes)."""
        probs = self.probabilities(images, image_embeds)
        return [ranked_labels(row, self.class_names, top_k) for row in probs]


def ranked_labels(scores, labels, top_k=None) -> list[dict]:
    order = np.argsort(-np.asarray(scores), kind="stable")[:top_k]
    return [{"label": labels[i], "score": float(scores[i])} for i in order]


@functools.lru_cache(maxsize=2)
def _cached_embedder(model: str | None):
    return load_embedder(model)


def zero_shot_classify(images, candidate_labels, hypothesis_template: str = "a photo of {}.",
                       model=None, processor=None, top_k: int | None = None, templates=None):
    """One call, like HF's zero-shot-image-classification pipeline.

    `images`: one image or a list (paths, bytes, PIL images, arrays). `model`: a model object
    (with `processor`), an `Embedder`, a checkpoint folder / hub id, or None for the bundled
    demo model. `templates` (a set name or list) replaces `hypothesis_template` for prompt
    ensembling. Returns, per image, a list of `{"label", "score"}` sorted by score; for a
    single image, just that list.
    """
    single = isinstance(images, (str, bytes)) or (
        isinstance(images, np.ndarray) and images.ndim == 3) or not isinstance(
        images, (list, tuple, np.ndarray))
    if isinstance(model, str) or model is None:
        model = _cached_embedder(model)
    classifier = ZeroShotClassifier(model, processor, candidate_labels,
                                    templates=templates or hypothesis_template)
    results = classifier([images] if single else images, top_k=top_k)
    return results[0] if single else results
