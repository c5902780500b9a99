"""Optimizers of ALIGN's recipe: LAMB (as the paper) or AdamW, with decoupled weight decay on
kernels and embeddings only (not on BatchNorm, LayerNorm, biases or the temperature)."""

from __future__ import annotations

import keras

from align_tf.errors import ConfigError
from align_tf.training.options import OPTIMIZERS



def no_weight_decay_variables(model) -> list:
    """The variables weight decay must leave alone: normalisation scales and offsets, every
    bias, and the temperature."""
    excluded = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization)):
            excluded.extend(layer.trainable_weights)
        elif getattr(layer, "bias", None) is not None:
            excluded.append(layer.bias)
    if getattr(model, "temperature", None) is not None:
        excluded.append(model.temperature)
    return excluded


def build_optimizer(model, name: str = "lamb", learning_rate=1e-3, weight_decay: float = 1e-5,
                    gradient_accumulation_steps: int = 1, global_clipnorm: float | None = None,
                    epsilon: float = 1e-6):
    """LAMB or AdamW for `model`'s trainable variables (call inside the strategy's scope, after
    freezing towers). `gradient_accumulation_steps` > 1 applies the mean gradient of that many
    batches once (Keras's own accumulation; the schedule counts applied updates)."""
    name = name.lower()
    common = dict(learning_rate=learning_rate, weight_decay=weight_decay or None,
                  global_clipnorm=global_clipnorm, epsilon=epsilon,
                  gradient_accumulation_steps=(gradient_accumulation_steps
                                               if gradient_accumulation_steps > 1 else None))
    if name == "lamb":
        optimizer = keras.optimizers.Lamb(**common)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(**common)
    else:
        raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_list=no_weight_decay_variables(model))
    return optimizer
