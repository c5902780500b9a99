"""Compiled TensorFlow inference: traces with unknown batch (one per image size), and text
batches trimmed to their longest row (padding columns cost time and change nothing).

By default the traced graphs are the frozen inference graphs of align_tf.models.frozen (weights
as constants in the model's compute precision, BatchNorm folded, fused kernels), rebuilt when
the weights change (`weights_token`). `model.frozen_inference = False` runs the Keras layers'
own graph instead (same numbers within float rounding, slower; reads the variables on every
call, so hand-assigned variables need no reset)."""

from __future__ import annotations

import tensorflow as tf

from align_tf.models.frozen import (image_features_graph, onednn_grouped_depthwise, text_features_graph,
                                    weights_token)

TOKENS_SPEC = [tf.TensorSpec([None, None], tf.int32, name=n)
               for n in ("input_ids", "attention_mask", "token_type_ids")]


def trim_padding(input_ids, attention_mask, token_type_ids):
    """Drop trailing columns that are padding in every row (works for any padding side)."""
    used = tf.reduce_any(tf.not_equal(attention_mask, 0), axis=0)
    length = tf.reduce_max(tf.concat([tf.cast(tf.where(used)[:, 0], tf.int32) + 1, [1]], 0))
    return input_ids[:, :length], attention_mask[:, :length], token_type_ids[:, :length]


MAX_IMAGE_SIZES = 8


def frozen(model) -> bool:
    return getattr(model, "frozen_inference", True)


def inference_dtype(model) -> str:
    """The precision the frozen graphs compute in: the model's compute dtype (float32, or
    bfloat16 / float16 under a mixed-precision policy)."""
    return model.dtype_policy.compute_dtype


def _function(fn, input_signature):
    function = tf.function(fn, input_signature=input_signature, jit_compile=False)
    # A new snapshot of the weights is a new trace by design (after fit, load_weights, ...):
    # not the "tf.function created in a loop" mistake that TF's retracing warning is about.
    function._omit_frequent_tracing_warning = True
    return function


def _cache(model, name: str) -> dict:
    """{key: tf.function} of `name`, emptied when the weights (or the mode) changed."""
    token = (frozen(model), inference_dtype(model)) + (weights_token(model) if frozen(model) else ())
    entry = model.__dict__.get(name)
    if entry is None or entry[0] != token:
        entry = model.__dict__[name] = (token, {})
    return entry[1]


def compiled_image_features(model, height=None, width=None):
    """tf.function: pixel_values [N, H, W, 3] -> unnormalised image features, float32.

    One trace per image size (unknown batch): with H and W known when tracing, every stride-2
    conv of the reference pads implicitly instead of copying the activations into a padded
    tensor (align_tf.models.efficientnet.implicit_padding). Past MAX_IMAGE_SIZES sizes, one
    trace with unknown H and W serves the rest (explicit padding, same numbers)."""
    cache = _cache(model, "_compiled_image_features")
    key = (height, width)
    if key not in cache and sum(isinstance(k, tuple) for k in cache) >= MAX_IMAGE_SIZES:
        key = (None, None)
    if key not in cache:
        spec = tf.TensorSpec([None, key[0], key[1], 3], tf.float32, name="pixel_values")
        if frozen(model):
            graph = cache.get("graph") or image_features_graph(
                model.vision_model, inference_dtype(model), onednn_grouped_depthwise())
            cache["graph"] = graph  # one weight snapshot for every size

            def fn(pixel_values):  # a function of its own per size (no retracing warnings)
                return graph(pixel_values)
        else:
            def fn(pixel_values):  # float32 out also under a mixed-precision policy
                return tf.cast(model.get_image_features(
                    pixel_values, training=False, data_format="channels_last"), tf.float32)
        cache[key] = _function(fn, [spec])
    return cache[key]


def compiled_text_features(model):
    """tf.function: int32 tokens [M, L] -> unnormalised text features, float32, padding trimmed."""
    cache = _cache(model, "_compiled_text_features")
    if "text" not in cache:
        if frozen(model):
            graph = text_features_graph(model, inference_dtype(model))
        else:
            def graph(ids, mask, types):
                return tf.cast(model.get_text_features(ids, mask, types, training=False), tf.float32)

        def text_features(input_ids, attention_mask, token_type_ids):
            return graph(*trim_padding(input_ids, attention_mask, token_type_ids))

        cache["text"] = _function(text_features, TOKENS_SPEC)
    return cache["text"]


def run_image_features(model, pixel_values):
    pixel_values = tf.cast(pixel_values, tf.float32)
    return compiled_image_features(model, pixel_values.shape[1], pixel_values.shape[2])(pixel_values)


def run_text_features(model, input_ids, attention_mask=None, token_type_ids=None):
    input_ids = tf.cast(input_ids, tf.int32)
    attention_mask = tf.ones_like(input_ids) if attention_mask is None else tf.cast(attention_mask, tf.int32)
    token_type_ids = tf.zeros_like(input_ids) if token_type_ids is None else tf.cast(token_type_ids, tf.int32)
    return compiled_text_features(model)(input_ids, attention_mask, token_type_ids)
