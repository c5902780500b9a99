"""Compiled TensorFlow inference: traces with unknown batch (one per image size), and text
batches trimmed to their longest row (padding columns cost time and change nothing)."""

from __future__ import annotations

import tensorflow as tf

TOKENS_SPEC = [tf.TensorSpec([None, None], tf.int32, name=n)
               for n in ("input_ids", "attention_mask", "token_type_ids")]


def trim_padding(input_ids, attention_mask, token_type_ids):
    """Drop trailing columns that are padding in every row (works for any padding side)."""
    used = tf.reduce_any(tf.not_equal(attention_mask, 0), axis=0)
    length = tf.reduce_max(tf.concat([tf.cast(tf.where(used)[:, 0], tf.int32) + 1, [1]], 0))
    return input_ids[:, :length], attention_mask[:, :length], token_type_ids[:, :length]


MAX_IMAGE_SIZES = 8


def compiled_image_features(model, height=None, width=None):
    """tf.function: pixel_values [N, H, W, 3] -> unnormalised image features (fused BatchNorm).

    One trace per image size (unknown batch): with H and W known when tracing, every stride-2
    conv of the reference pads implicitly instead of copying the activations into a padded
    tensor (align_tf.models.efficientnet.implicit_padding). Past MAX_IMAGE_SIZES sizes, one
    trace with unknown H and W serves the rest (explicit padding, same numbers)."""
    cache = model.__dict__.setdefault("_compiled_image_features", {})
    key = (height, width)
    if key not in cache and len(cache) >= MAX_IMAGE_SIZES:
        key = (None, None)
    if key not in cache:
        spec = tf.TensorSpec([None, key[0], key[1], 3], tf.float32, name="pixel_values")
        cache[key] = tf.function(  # float32 out also under a mixed-precision policy
            lambda pixel_values: tf.cast(model.get_image_features(
                pixel_values, training=False, data_format="channels_last"), tf.float32),
            input_signature=[spec], jit_compile=False)
    return cache[key]


def compiled_text_features(model):
    """tf.function: int32 tokens [M, L] -> unnormalised text features, padding trimmed."""
    if "_compiled_text_features" not in model.__dict__:
        def text_features(input_ids, attention_mask, token_type_ids):
            ids, mask, types = trim_padding(input_ids, attention_mask, token_type_ids)
            return tf.cast(model.get_text_features(ids, mask, types, training=False), tf.float32)

        model.__dict__["_compiled_text_features"] = tf.function(
            text_features, input_signature=TOKENS_SPEC, jit_compile=False)
    return model.__dict__["_compiled_text_features"]


def run_image_features(model, pixel_values):
    pixel_values = tf.cast(pixel_values, tf.float32)
    return compiled_image_features(model, pixel_values.shape[1], pixel_values.shape[2])(pixel_values)


def run_text_features(model, input_ids, attention_mask=None, token_type_ids=None):
    input_ids = tf.cast(input_ids, tf.int32)
    attention_mask = tf.ones_like(input_ids) if attention_mask is None else tf.cast(attention_mask, tf.int32)
    token_type_ids = tf.zeros_like(input_ids) if token_type_ids is None else tf.cast(token_type_ids, tf.int32)
    return compiled_text_features(model)(input_ids, attention_mask, token_type_ids)
