"""The weight table: every Keras variable <- its Hugging Face key and layout transform.

Loading walks the table, checks every key and shape, and refuses to leave any variable
unset; saving in HF layout walks the same table backwards.
"""

from __future__ import annotations

import numpy as np

from align_tf.errors import ArgumentTypeError, CheckpointMismatchError  # noqa: F401  (public here too)

# Layout transforms, HF (PyTorch) -> Keras, and their inverses.
TO_KERAS = {
    "identity": lambda a: a,
    "linear": lambda a: a.T,                                  # (out, in) -> (in, out)
    "conv": lambda a: a.transpose(2, 3, 1, 0),                # (O, I, kh, kw) -> (kh, kw, I, O)
    "depthwise": lambda a: a.transpose(2, 3, 0, 1),           # (C, 1, kh, kw) -> (kh, kw, C, 1)
    "scalar": lambda a: a.reshape(()),
}
TO_HF = {
    "identity": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(3, 2, 0, 1),
    "depthwise": lambda a: a.transpose(2, 3, 0, 1),
    "scalar": lambda a: a.reshape(()),
}

# Buffers that HF checkpoints may carry and that hold no weights.
IGNORED_SUFFIXES = ("num_batches_tracked", "embeddings.position_ids", "embeddings.token_type_ids")


def _bn(prefix, bn):
    return [(f"{prefix}.weight", bn.gamma, "identity"), (f"{prefix}.bias", bn.beta, "identity"),
            (f"{prefix}.running_mean", bn.moving_mean, "identity"),
            (f"{prefix}.running_var", bn.moving_variance, "identity")]


def _dense(prefix, dense, transform="linear"):
    return [(f"{prefix}.weight", dense.kernel, transform), (f"{prefix}.bias", dense.bias, "identity")]


def _layer_norm(prefix, ln):
    return [(f"{prefix}.weight", ln.gamma, "identity"), (f"{prefix}.bias", ln.beta, "identity")]


def vision_table(vision_model, prefix="vision_model.") -> list[tuple]:
    """(HF key, Keras variable, transform) for every weight of `AlignVisionModel`."""
    p = f"{prefix}embeddings"
    emb = vision_model.embeddings
    rows = [(f"{p}.convolution.weight", emb.convolution.kernel, "conv")] + _bn(f"{p}.batchnorm", emb.batchnorm)
    for i, block in enumerate(vision_model.blocks):
        b = f"{prefix}encoder.blocks.{i}"
        if block.expand:
            rows.append((f"{b}.expansion.expand_conv.weight", block.expand_conv.kernel, "conv"))
            rows += _bn(f"{b}.expansion.expand_bn", block.expand_bn)
        rows.append((f"{b}.depthwise_conv.depthwise_conv.weight", block.depthwise_conv.kernel, "depthwise"))
        rows += _bn(f"{b}.depthwise_conv.depthwise_norm", block.depthwise_norm)
        se = block.squeeze_excite
        rows += _dense(f"{b}.squeeze_excite.reduce", se.reduce, "conv")
        rows += _dense(f"{b}.squeeze_excite.expand", se.expand, "conv")
        rows.append((f"{b}.projection.project_conv.weight", block.project_conv.kernel, "conv"))
        rows += _bn(f"{b}.projection.project_bn", block.project_bn)
    return rows


def text_table(text_model, prefix="text_model.") -> list[tuple]:
    """(HF key, Keras variable, transform) for every weight of `AlignTextModel` (BERT names)."""
    e = text_model.embeddings
    rows = [
        (f"{prefix}embeddings.word_embeddings.weight", e.word_embeddings.embeddings, "identity"),
        (f"{prefix}embeddings.position_embeddings.weight", e.position_embeddings.embeddings, "identity"),
        (f"{prefix}embeddings.token_type_embeddings.weight", e.token_type_embeddings.embeddings, "identity"),
    ] + _layer_norm(f"{prefix}embeddings.LayerNorm", e.LayerNorm)
    for i, layer in enumerate(text_model.encoder_layers):
        p = f"{prefix}encoder.layer.{i}"
        rows += _dense(f"{p}.attention.self.query", layer.query)
        rows += _dense(f"{p}.attention.self.key", layer.key)
        rows += _dense(f"{p}.attention.self.value", layer.value)
        rows += _dense(f"{p}.attention.output.dense", layer.attention_output_dense)
        rows += _layer_norm(f"{p}.attention.output.LayerNorm", layer.attention_output_LayerNorm)
        rows += _dense(f"{p}.intermediate.dense", layer.intermediate_dense)
        rows += _dense(f"{p}.output.dense", layer.output_dense)
        rows += _layer_norm(f"{p}.output.LayerNorm", layer.output_LayerNorm)
    if text_model.pooler is not None:
        rows += _dense(f"{prefix}pooler.dense", text_model.pooler)
    return rows


def align_table(model) -> list[tuple]:
    """(HF key, Keras variable, transform) for every weight of `AlignModel`."""
    return ([("temperature", model.temperature, "scalar")]
            + _dense("text_projection", model.text_projection)
            + text_table(model.text_model, "text_model.")
            + vision_table(model.vision_model, "vision_model."))


TABLES = {"": align_table, "text_model.": text_table, "vision_model.": vision_table}


def weight_table(model, prefix=None) -> list[tuple]:
    """The table for any of the three models, chosen by the model's `checkpoint_prefix` (its key
    prefix inside a joint ALIGN checkpoint), so this module never imports a model class."""
    kind = getattr(model, "checkpoint_prefix", None)
    if kind not in TABLES:
        raise ArgumentTypeError(f"no weight table for {type(model).__name__} "
                        f"(expected an AlignModel, AlignTextModel or AlignVisionModel)")
    if not model.built:
        model.build()
    if kind == "":
        return align_table(model)
    return TABLES[kind](model, "" if prefix is None else prefix)


def _ignored(key: str) -> bool:
    return key.endswith(IGNORED_SUFFIXES)


def _shape(state, key) -> tuple:
    shape_of = getattr(state, "shape_of", None)
    return tuple(shape_of(key)) if shape_of else tuple(np.shape(state[key]))


def _transformed_shape(transform: str, shape: tuple) -> tuple:
    # A zero-strided view: transposes without touching memory.
    return tuple(TO_KERAS[transform](np.broadcast_to(np.float32(0), shape)).shape)


def _hf_shape(transform: str, keras_shape) -> tuple:
    return tuple(TO_HF[transform](np.broadcast_to(np.float32(0), tuple(keras_shape))).shape)


def assign_state_dict(model, state, prefix: str = "", source: str = "") -> int:
    """Set every variable of `model` from `state` (HF keys -> arrays; a lazy mapping with a
    `shape_of(key)` method is read one tensor at a time). Strict: any missing key, extra key
    under `prefix` (weightless buffers aside) or shape mismatch raises
    `CheckpointMismatchError` before any variable is changed. Keys outside `prefix` (the other
    tower of a joint checkpoint, task heads) are not this model's. Returns the count assigned."""
    table = weight_table(model, prefix)
    missing, mismatched = [], []
    for key, variable, transform in table:
        if key not in state:
            missing.append((key, _hf_shape(transform, variable.shape)))
        elif _transformed_shape(transform, _shape(state, key)) != tuple(variable.shape):
            mismatched.append((key, _shape(state, key), _hf_shape(transform, variable.shape)))
    used = {key for key, _, _ in table}
    unexpected = [(k, _shape(state, k)) for k in state
                  if k.startswith(prefix) and k not in used and not _ignored(k)
                  and not (k.startswith(prefix + "pooler.") and getattr(model, "pooler", 0) is None)]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError.from_keys(missing, unexpected, mismatched, source)
    # One tensor at a time, so a lazy state dict never holds the whole checkpoint in memory.
    for key, variable, transform in table:
        variable.assign(TO_KERAS[transform](np.asarray(state[key])).astype(variable.dtype, copy=False))
    if hasattr(model, "reset_inference_graphs"):  # snapshots of the old weights are stale
        model.reset_inference_graphs()
    return len(table)


def export_state_dict(model, prefix=None) -> dict[str, np.ndarray]:
    """{HF key: array in PyTorch layout} for every variable of `model`."""
    out = {}
    for key, variable, transform in weight_table(model, prefix):
        out[key] = np.array(TO_HF[transform](np.asarray(variable.numpy())), dtype=np.float32, order="C")
        if key.endswith(".running_var"):
            # torch's BatchNorm buffer; written so transformers loads without a "missing" report.
            out[key[: -len("running_var")] + "num_batches_tracked"] = np.array(0, dtype=np.int64)
    return out
