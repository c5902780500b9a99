"""Embedder: texts and images in, L2-normalised numpy embeddings out, in batches.

Works with any model that has `get_text_features(input_ids, attention_mask, token_type_ids)` and
`get_image_features(pixel_values)` and a processor called as `processor(text=[...])` /
`processor(images=[...])` (an `AlignProcessor`, or anything shaped like one).
"""

from __future__ import annotations

import re

import numpy as np

from align_tf.assets import DEMO_MODEL, resolve_model
from align_tf.errors import ArgumentTypeError, EmbeddingInputError  # noqa: F401  (public here too)
from align_tf.models.normalize import l2_normalize  # noqa: F401  (public here too)
from align_tf.progress import progress_bar


class Embedder:
    """Batched, normalised embeddings from a dual-encoder model and its processor.

    AlignModel runs its towers as compiled graphs when called eagerly (align_tf.models.compiled),
    so batches here cost one graph call each.
    """

    def __init__(self, model, processor, batch_size: int = 32, source: str | None = None):
        self.model = model
        self.processor = processor
        self.batch_size = int(batch_size)
        self.source = source

    @property
    def is_demo(self) -> bool:
        return self.source == DEMO_MODEL

    @property
    def dim(self) -> int | None:
        config = getattr(self.model, "config", None)
        return getattr(config, "projection_dim", None)

    @property
    def temperature(self) -> float:
        """The model's logit temperature (logits = cosine / temperature); 1.0 if it has none."""
        value = getattr(self.model, "temperature", None)
        if value is None:
            return 1.0
        if hasattr(self.model, "effective_temperature"):
            value = self.model.effective_temperature()
        return float(np.asarray(value))

    def embed_texts(self, texts, batch_size: int | None = None, progress=False,
                    desc: str = "texts", on_batch=None) -> np.ndarray:
        """[M, D] float32, each row L2-normalised."""
        if isinstance(texts, str):
            raise ArgumentTypeError("embed_texts: expected a list of strings, got one string "
                            f"({texts[:40]!r}); wrap it in a list")
        return self._embed(list(texts), self._text_batch, batch_size, progress, desc, on_batch)

    def embed_images(self, images, batch_size: int | None = None, progress=False,
                     desc: str = "images", on_batch=None) -> np.ndarray:
        """[N, D] float32, each row L2-normalised. `images`: whatever the processor takes
        (paths, encoded bytes, PIL images, uint8 arrays), or one float32 `pixel_values` array."""
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.dtype.kind == "f":
            return self._embed(images, self._pixel_batch, batch_size, progress, desc, on_batch)
        return self._embed(list(images), self._image_batch, batch_size, progress, desc, on_batch)

    # -- one batch ---------------------------------------------------------------------
    def _text_batch(self, texts):
        inputs = self.processor(text=texts)
        features = self.model.get_text_features(
            inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids"))
        return l2_normalize(np.asarray(features))

    def _image_batch(self, images):
        return self._pixel_batch(self.processor(images=images)["pixel_values"])

    def _pixel_batch(self, pixel_values):
        return l2_normalize(np.asarray(self.model.get_image_features(pixel_values)))

    def _embed(self, items, embed_batch, batch_size, progress, desc, on_batch):
        size = int(batch_size or self.batch_size)
        bar = progress_bar(len(items), desc, progress, leave=False)
        parts = []
        try:
            for start in range(0, len(items), size):
                batch = items[start:start + size]
                try:
                    parts.append(embed_batch(batch))
                except (ValueError, TypeError, OSError) as e:
                    where = _which(batch, start, len(items), desc, e)
                    message = str(e) if where in str(e) else f"{where}: {e}"
                    raise EmbeddingInputError(message) from e
                bar.update(len(batch))
                if on_batch is not None:
                    on_batch(len(batch))
        finally:
            bar.close()
        if not parts:
            return np.zeros((0, self.dim or 0), np.float32)
        return np.concatenate(parts)


def _which(batch, start, total, desc, error) -> str:
    # The image processor names the failing item by its place in the batch ("image 3 of 32").
    found = re.search(r"image (\d+) of", str(error))
    if found and int(found.group(1)) < len(batch) and isinstance(batch[int(found.group(1))], str):
        return batch[int(found.group(1))]
    return f"{desc} {start + 1}-{start + len(batch)} of {total}"


def load_embedder(model: str | None = None, batch_size: int = 32) -> Embedder:
    """An Embedder for a checkpoint folder or hub id, or the bundled demo model when None."""
    from align_tf.models.align import AlignModel
    from align_tf.preprocessing.processor import AlignProcessor

    folder, is_demo = resolve_model(model)
    return Embedder(AlignModel.from_pretrained(folder), AlignProcessor.from_pretrained(folder),
                    batch_size=batch_size, source=DEMO_MODEL if is_demo else model)


DEMO_MODEL_NOTE = ("Using the small demo model bundled with align-tf (shapes and colours only). "
                   "For real photos pass --model kakaobrain/align-base (or a checkpoint folder).")
