"""AlignProcessor: the tokenizer and the image processor behind one HF-style call."""

from __future__ import annotations

import os

import tensorflow as tf

from align_tf.preprocessing.image import AlignImageProcessor
from align_tf.preprocessing.tokenizer import AlignTokenizer, resolve_folder


class AlignProcessor(tf.Module):
    """`processor(text=..., images=...)` -> the model's input dict.

    `pixel_values` (float32 [N, 289, 289, 3]) for images; `input_ids`, `attention_mask`,
    `token_type_ids` (int32 [M, L]) for texts; both when both are given. Reads and writes the
    files of an HF checkpoint folder (`vocab.txt`, `tokenizer_config.json`,
    `preprocessor_config.json`).
    """

    def __init__(self, tokenizer: AlignTokenizer, image_processor: AlignImageProcessor | None = None, name=None):
        super().__init__(name=name or "align_processor")
        if tokenizer is None:
            raise ValueError("AlignProcessor needs a tokenizer")
        self.tokenizer = tokenizer
        self.image_processor = image_processor if image_processor is not None else AlignImageProcessor()

    def __call__(self, text=None, images=None, training: bool = False) -> dict[str, tf.Tensor]:
        if text is None and images is None:
            raise ValueError("give text=..., images=..., or both")
        out = {}
        if text is not None:
            out.update(self.tokenizer(text))
        if images is not None:
            if isinstance(images, (tf.Tensor, tf.Variable)) and images.dtype == tf.string:
                out["pixel_values"] = self.image_processor.preprocess_bytes(images, training=training)
            else:
                out["pixel_values"] = self.image_processor(images, training=training)
        return out

    @classmethod
    def from_pretrained(cls, name_or_path: str, **tokenizer_overrides) -> "AlignProcessor":
        """From an HF checkpoint folder, one of ours, or a hub id (resolved like the model's)."""
        folder = resolve_folder(os.fspath(name_or_path))
        tokenizer = AlignTokenizer.from_pretrained(folder, **tokenizer_overrides)
        if os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
            image_processor = AlignImageProcessor.from_pretrained(folder)
        else:
            image_processor = AlignImageProcessor()
        return cls(tokenizer, image_processor)

    def save_pretrained(self, folder: str) -> list[str]:
        """Write vocab.txt, tokenizer_config.json, special_tokens_map.json, preprocessor_config.json."""
        written = self.tokenizer.save_pretrained(folder)
        written.append(self.image_processor.save_pretrained(folder))
        return written

    def __repr__(self) -> str:
        return f"AlignProcessor(\n  {self.tokenizer!r},\n  {self.image_processor!r}\n)"
