"""Compiled TensorFlow inference: one trace per model with unknown batch and size, and text
batches trimmed to their longest row (padding columns cost time and change nothing)."""

from __future__ import annotations

import tensorflow as tf

PIXELS_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32, name="pixel_values")
TOKENS_SPEC = [tf.TensorSpec([None, None], tf.int32, name=n)
               for n in ("input_ids", "attention_mask", "token_type_ids")]


def trim_padding(input_ids, attention_mask, token_type_ids):
    """Drop trailing columns that are padding in every row (works for any padding side)."""
    used = tf.reduce_any(tf.not_equal(attention_mask, 0), axis=0)
    length = tf.reduce_max(tf.concat([tf.cast(tf.where(used)[:, 0], tf.int32) + 1, [1]], 0))
    return input_ids[:, :length], attention_mask[:, :length], token_type_ids[:, :length]


def compiled_image_features(model):
    """tf.function: pixel_values [N, H, W, 3] -> unnormalised image features (folded BN)."""
    if "_compiled_image_features" not in model.__dict__:
        model.__dict__["_compiled_image_features"] = tf.function(
            lambda pixel_values: model.get_image_features(pixel_values, training=False),
            input_signature=[PIXELS_SPEC], jit_compile=False)
    return model.__dict__["_compiled_image_features"]


def compiled_text_features(model):
    """tf.function: int32 tokens [M, L] -> unnormalised text features, padding trimmed."""
    if "_compiled_text_features" not in model.__dict__:
        def text_features(input_ids, attention_mask, token_type_ids):
            ids, mask, types = trim_padding(input_ids, attention_mask, token_type_ids)
            return model.get_text_features(ids, mask, types, training=False)

        model.__dict__["_compiled_text_features"] = tf.function(
            text_features, input_signature=TOKENS_SPEC, jit_compile=False)
    return model.__dict__["_compiled_text_features"]


def run_image_features(model, pixel_values):
    return compiled_image_features(model)(tf.cast(pixel_values, tf.float32))


def run_text_features(model, input_ids, attention_mask=None, token_type_ids=None):
    input_ids = tf.cast(input_ids, tf.int32)
    attention_mask = tf.ones_like(input_ids) if attention_mask is None else tf.cast(attention_mask, tf.int32)
    token_type_ids = tf.zeros_like(input_ids) if token_type_ids is None else tf.cast(token_type_ids, tf.int32)
    return compiled_text_features(model)(input_ids, attention_mask, token_type_ids)
