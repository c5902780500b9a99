"""AlignProcessor: the tokenizer and the image processor behind one HF-style call."""

from __future__ import annotations

import os

import tensorflow as tf

from align_tf.preprocessing.image import AlignImageProcessor
from align_tf.preprocessing.tokenizer import AlignTokenizer, convert_tensors, resolve_folder
from align_tf.errors import ArgumentTypeError, ConfigError

TEXT_OPTIONS = ("padding", "max_length", "truncation", "return_attention_mask",
                "return_token_type_ids", "return_tensors")
IMAGE_OPTIONS = ("size", "crop_size", "do_center_crop", "do_resize", "resample", "do_rescale",
                 "rescale_factor", "rescale_offset", "do_normalize", "image_mean", "image_std",
                 "include_top", "data_format", "return_tensors")


def merge_options(text_kwargs, images_kwargs, common_kwargs, flat) -> dict:
    """{"text": {...}, "images": {...}} call-time options, merged as transformers'
    `ProcessorMixin._merge_kwargs` does: common < per modality < flat."""
    merged = {"text": {}, "images": {}}
    for name, valid in (("text", TEXT_OPTIONS), ("images", IMAGE_OPTIONS)):
        for key, value in (common_kwargs or {}).items():
            if key in valid:
                merged[name][key] = value
        given = text_kwargs if name == "text" else images_kwargs
        for key, value in (given or {}).items():
            if key not in valid:
                raise ArgumentTypeError(f"{name}_kwargs: {key!r} is not a {name} option; "
                                f"the {name} options are {', '.join(valid)}")
            if key in flat:
                raise ConfigError(f"{key!r} was given twice: in {name}_kwargs and as a keyword")
            merged[name][key] = value
        for key, value in flat.items():
            if key in valid:
                merged[name][key] = value
    unknown = sorted(k for k in list(flat) + list(common_kwargs or {})
                     if k not in TEXT_OPTIONS and k not in IMAGE_OPTIONS)
    if unknown:
        raise ArgumentTypeError(f"AlignProcessor got option(s) it does not take: {', '.join(unknown)}; "
                        f"text options: {', '.join(TEXT_OPTIONS)}; image options: {', '.join(IMAGE_OPTIONS)}")
    return merged


class AlignProcessor(tf.Module):
    """`processor(images=..., text=...)` -> the model's input dict (images first, as in transformers).

    `pixel_values` (float32 [N, 289, 289, 3]) for images; `input_ids`, `attention_mask`,
    `token_type_ids` (int32 [M, L]) for texts; both when both are given. Reads and writes the
    files of an HF checkpoint folder (`vocab.txt`, `tokenizer_config.json`,
    `preprocessor_config.json`).
    """

    def __init__(self, tokenizer: AlignTokenizer, image_processor: AlignImageProcessor | None = None, name=None):
        super().__init__(name=name or "align_processor")
        if tokenizer is None:
            raise ConfigError("AlignProcessor needs a tokenizer")
        self.tokenizer = tokenizer
        self.image_processor = image_processor if image_processor is not None else AlignImageProcessor()

    def __call__(self, images=None, text=None, images_kwargs: dict | None = None,
                 text_kwargs: dict | None = None, common_kwargs: dict | None = None,
                 training: bool = False, **kwargs) -> dict:
        """transformers' `AlignProcessor.__call__`: `images` first, then `text`; options per
        modality (`text_kwargs`, `images_kwargs`), for both (`common_kwargs`), or flat. A flat
        option wins over the same one in a modality dict only if it is not in both (that raises,
        as in transformers); an option neither part takes raises TypeError.

        Text options: padding, max_length, truncation, return_attention_mask,
        return_token_type_ids. Image options: size, crop_size, do_center_crop, do_resize,
        resample, do_rescale, rescale_factor, rescale_offset, do_normalize, image_mean,
        image_std, include_top, data_format ("channels_last" default, or "channels_first" as
        transformers returns). `return_tensors`: "tf" (default), "np", "jax" or None (lists).
        Without options, the tokenizer's and image processor's own settings apply.
        """
        if text is None and images is None:
            raise ConfigError("give text=..., images=..., or both")
        options = merge_options(text_kwargs, images_kwargs, common_kwargs, kwargs)
        text_options, image_options = options["text"], options["images"]
        out = {}
        if text is not None:
            return_tensors = text_options.pop("return_tensors", "tf")
            if {"padding", "truncation"} & set(text_options):
                # transformers' AlignProcessor passes max_length=64 along with any call-time option.
                text_options.setdefault("max_length", self.tokenizer.max_length)
            out.update(self.tokenizer(text, return_tensors=return_tensors, **text_options))
        if images is not None:
            return_tensors = image_options.pop("return_tensors", "tf")
            data_format = image_options.pop("data_format", "channels_last")
            if data_format not in ("channels_last", "channels_first"):
                raise ConfigError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
            image_processor = self.image_processor_with(image_options)
            if isinstance(images, (tf.Tensor, tf.Variable)) and images.dtype == tf.string:
                pixels = image_processor.preprocess_bytes(images, training=training)
            else:
                pixels = image_processor(images, training=training)
            if data_format == "channels_first":
                pixels = tf.transpose(pixels, (0, 3, 1, 2))
            out.update(convert_tensors({"pixel_values": pixels}, return_tensors))
        return out

    def image_processor_with(self, options: dict) -> AlignImageProcessor:
        """The image processor, or a copy with call-time options (one copy per option set)."""
        if not options:
            return self.image_processor
        options = dict(options)
        if "resample" in options:
            options["resample"] = int(options["resample"])  # PIL's Resampling enum too
        key = repr(sorted(options.items()))
        cache = self.__dict__.setdefault("_image_processors", {})
        if key not in cache:
            cache[key] = AlignImageProcessor.from_config(self.image_processor.get_config(), **options)
        return cache[key]

    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        """The tokenizer's `decode` (transformers' processor forwards it the same way); left
        out, `clean_up_tokenization_spaces` is the tokenizer's own (its config's value, else
        False as in transformers 5)."""
        return self.tokenizer.decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces)

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """The tokenizer's `batch_decode`."""
        return self.tokenizer.batch_decode(sequences, skip_special_tokens, clean_up_tokenization_spaces)

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
