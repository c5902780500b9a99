"""The contrastive step on a fixed global batch, written out by hand: what the one-process and
multi-worker distributed tests compare against."""

from __future__ import annotations

import numpy as np

GLOBAL_BATCH = 8
IMAGE_SIZE = 64
LEARNING_RATE = 0.1  # SGD, so a wrong gradient scale shows (Adam and LAMB would hide it)


def step_config():
    from support import tiny_align_config, tiny_text_config, tiny_vision_config

    # No dropout and no drop-connect, so a training-mode step is deterministic.
    return tiny_align_config(
        text_config=tiny_text_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        vision_config=tiny_vision_config(drop_connect_rate=0.0))


def global_batch():
    from support import pixel_batch, text_batch

    lengths = (3, 5, 7, 4, 8, 2, 6, 5)
    inputs = text_batch(1000, lengths=lengths, max_len=8, seed=1)
    inputs["pixel_values"] = pixel_batch(GLOBAL_BATCH, IMAGE_SIZE, seed=2)
    return inputs


def reference_step(model, inputs, num_replicas):
    """The global-batch loss written out by hand on one device: BatchNorm statistics per
    replica-sized slice (what per-replica BatchNorm computes), everything else on the whole
    batch, the reference `align_loss` on the full [M, N] logits, one SGD step."""
    import tensorflow as tf
    from keras import ops

    from align_tf.models.losses import align_loss
    from align_tf.models.align import l2_normalize

    variables = [v for v in model.trainable_variables if "pooler" not in v.path]
    slices = np.split(inputs["pixel_values"], num_replicas)
    with tf.GradientTape() as tape:
        image = ops.concatenate([model.get_image_features(s, training=True) for s in slices], 0)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"],
                                       inputs["token_type_ids"], training=True)
        logits = ops.matmul(l2_normalize(text), ops.transpose(l2_normalize(image)))
        loss = align_loss(logits / model.temperature, model.label_smoothing)
    for g, v in zip(tape.gradient(loss, variables), variables):
        v.assign_sub(LEARNING_RATE * tf.convert_to_tensor(g))  # embeddings: IndexedSlices
    return float(loss)
