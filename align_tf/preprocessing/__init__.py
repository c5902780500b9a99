"""Preprocessing as TensorFlow graph code: the tokenizer, the image processor, and both together."""

from align_tf.preprocessing.image import AlignImageProcessor, ImageDecodeError, ImageSizeError
from align_tf.preprocessing.processor import AlignProcessor
from align_tf.preprocessing.tokenizer import AlignTokenizer, TextInputError

__all__ = [
    "AlignImageProcessor",
    "AlignProcessor",
    "AlignTokenizer",
    "ImageDecodeError",
    "ImageSizeError",
    "TextInputError",
]
