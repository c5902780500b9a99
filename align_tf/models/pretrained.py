"""`from_pretrained` / `save_pretrained` shared by AlignModel and both towers."""

from __future__ import annotations

import contextlib
import os
import shutil

import numpy as np
from align_tf.errors import ConfigError

KERAS_WEIGHTS_NAME = "model.weights.h5"
# Tokenizer / preprocessor files carried along when a model is saved again.
PROCESSOR_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "preprocessor_config.json")


def _host_zeros(shape, dtype=None):
    return np.zeros(tuple(shape), dtype=np.dtype(dtype or "float32"))


@contextlib.contextmanager
def initialized_from_checkpoint(model):
    """Build `model`'s variables as host zeros instead of running their random initializers:
    every one of them is about to be overwritten by a strict load. Random init of align-base's
    172M parameters takes seconds under TensorFlow, and under JAX compiles one XLA program per
    weight shape (minutes). Layer initializers are restored afterwards."""
    saved = []
    flatten = getattr(model, "_flatten_layers", None)
    for layer in (flatten(include_self=True, recursive=True) if flatten else ()):
        for name, value in list(vars(layer).items()):
            if name.endswith("_initializer") and value is not None and not name.startswith("_"):
                saved.append((layer, name, value))
                setattr(layer, name, _host_zeros)
    try:
        yield model
    finally:
        for layer, name, value in saved:
            setattr(layer, name, value)


class PretrainedMixin:
    """Needs `config_class` and `checkpoint_prefix` (the model's key prefix inside a joint
    ALIGN checkpoint: "text_model.", "vision_model." or "")."""

    config_class = None
    checkpoint_prefix = ""
    source_folder: str | None = None

    @classmethod
    def _config_and_prefix(cls, folder: str):
        from align_tf.configuration import AlignConfig, load_config

        config = load_config(folder)
        if isinstance(config, cls.config_class):
            return config, ""
        if isinstance(config, AlignConfig) and cls.checkpoint_prefix:
            sub = config.text_config if cls.checkpoint_prefix == "text_model." else config.vision_config
            if isinstance(sub, cls.config_class):
                return sub, cls.checkpoint_prefix
        raise ConfigError(
            f"{folder}: its config.json ({type(config).__name__}) cannot build a {cls.__name__}"
        )

    @classmethod
    def from_pretrained(cls, name_or_path, revision: str | None = None, **kwargs):
        """Load from an HF checkpoint folder, an align-tf folder, or a hub id. Strict: every
        weight must come from the file with the right shape, or nothing loads."""
        from align_tf.checkpoints.convert import assign_state_dict
        from align_tf.checkpoints.hub import resolve_pretrained
        from align_tf.checkpoints.state_dict import read_state_dict

        folder = resolve_pretrained(name_or_path, revision=revision)
        config, prefix = cls._config_and_prefix(folder)
        model = cls(config, **kwargs)
        with initialized_from_checkpoint(model):
            model.build()
        keras_weights = os.path.join(folder, KERAS_WEIGHTS_NAME)
        if os.path.exists(keras_weights) and not prefix:
            load_keras_weights_strict(model, keras_weights)
        else:
            state, source = read_state_dict(folder)
            if not prefix and any(k.startswith("bert.") for k in state):
                prefix = "bert."  # BERT task-head checkpoints (BertForMaskedLM, ...)
            assign_state_dict(model, state, prefix=prefix, source=source)
        model.source_folder = folder
        return model

    def save_pretrained(self, directory: str, format: str = "keras", processor=None) -> str:
        """Write config.json and weights (`model.weights.h5`, or `model.safetensors` in HF layout
        with format="hf"), plus the tokenizer / preprocessor files the model was loaded with
        (or those of `processor`)."""
        from align_tf.checkpoints.convert import export_state_dict

        if format not in ("keras", "hf"):
            raise ConfigError(f"format must be 'keras' or 'hf', got {format!r}")
        os.makedirs(directory, exist_ok=True)
        if not self.built:
            self.build()
        config = self.config.to_dict()
        if format == "hf":
            from safetensors.numpy import save_file

            config.setdefault("architectures", [type(self).__name__])
            save_file(export_state_dict(self), os.path.join(directory, "model.safetensors"),
                      metadata={"format": "pt"})
        else:
            self.save_weights(os.path.join(directory, KERAS_WEIGHTS_NAME))
        self.config.__class__.from_dict(config).save_pretrained(directory)
        if processor is not None:
            processor.save_pretrained(directory)
        elif self.source_folder and os.path.abspath(self.source_folder) != os.path.abspath(directory):
            for name in PROCESSOR_FILES:
                src = os.path.join(self.source_folder, name)
                if os.path.exists(src):
                    shutil.copyfile(src, os.path.join(directory, name))
        return directory


def load_keras_weights_strict(model, path: str) -> None:
    """`model.load_weights`, but the file must hold exactly the model's variables."""
    import h5py

    from align_tf.checkpoints.convert import CheckpointMismatchError

    with h5py.File(path, "r") as f:
        stored = []
        f.visititems(lambda name, obj: stored.append(name) if isinstance(obj, h5py.Dataset) else None)
    # A compiled model's file also holds its optimizer's state, which loading does not use.
    stored = [name for name in stored if not name.startswith("optimizer/")]
    if len(stored) != len(model.weights):
        raise CheckpointMismatchError(
            f"{path} holds {len(stored)} arrays but the {type(model).__name__} built from its "
            f"config.json has {len(model.weights)} variables; nothing was loaded"
        )
    try:
        model.load_weights(path)
    except ValueError as exc:
        raise CheckpointMismatchError(f"{path} does not match the model: {exc}") from exc
