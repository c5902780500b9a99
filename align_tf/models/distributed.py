"""The TensorFlow side of the contrastive step: global-batch negatives across replicas, and logs
shaped so that Keras can reduce them under every `tf.distribute` strategy."""

from __future__ import annotations

import tensorflow as tf


class GlobalBatch:
    """This replica's view of the global batch: every replica's embeddings, in replica order.

    `offset` is where this replica's rows start in the global batch and `share` is its fraction
    of the global batch (local / global size): a replica's mean loss times `share`, summed over
    replicas (which is what the optimizer does with the gradients), is the global-batch mean.
    """

    def __init__(self, text_embeds, image_embeds, gather: bool = True):
        context = tf.distribute.get_replica_context()
        local_size = tf.shape(text_embeds)[0]
        self.num_replicas = context.num_replicas_in_sync if context is not None else 1
        if not gather or self.num_replicas == 1:
            # Without the gather each replica only sees its own negatives (the ablation).
            self.text_embeds, self.image_embeds = text_embeds, image_embeds
            self.offset = tf.constant(0, tf.int32)
            self.share = 1.0 / self.num_replicas
            return
        # all_gather passes gradients back to the replica that produced each row.
        self.text_embeds = context.all_gather(text_embeds, axis=0)
        self.image_embeds = context.all_gather(image_embeds, axis=0)
        # Replicas may hold different numbers of rows (a final partial batch): use real sizes.
        sizes = context.all_gather(tf.reshape(local_size, [1]), axis=0)
        replica_id = tf.cast(context.replica_id_in_sync_group, tf.int32)
        self.offset = tf.reduce_sum(sizes[:replica_id])
        self.share = tf.cast(local_size, tf.float32) / tf.cast(tf.reduce_sum(sizes), tf.float32)


def keras_reduces_logs_on_axis0() -> bool:
    """True where Keras 3 (through at least 3.15.1) reduces a train/test step's logs with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars: MultiWorkerMirroredStrategy
    in multi-worker mode (Keras's own `_collective_all_reduce_multi_worker` condition)."""
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(in_multi_worker_mode()) if in_multi_worker_mode is not None else True


def logs_for_keras(logs: dict) -> dict:
    """Scalar logs as-is; under multi-worker, shape-[1] tensors, so that Keras's axis-0 mean over
    replicas gives back the scalar mean instead of failing ("Invalid reduction dimension 0")."""
    if not keras_reduces_logs_on_axis0():
        return logs
    return {name: tf.reshape(tf.cast(value, tf.float32), [1]) for name, value in logs.items()}


def build_for_fit(model) -> None:
    """Create every variable `fit` / `evaluate` need (model, optimizer) in the model's strategy.

    Stands in for Keras's `_maybe_symbolic_build`, which first reduces a sample batch with
    `strategy.reduce("MEAN", batch)`: under MultiWorkerMirroredStrategy that fails for any
    batch that is a dict or tuple ("Attempt to convert a value (PerReplica...)"), and an
    `AlignModel` builds from its config alone, so no sample batch is needed. Called under any
    strategy (the default one included).
    """
    # The optimizer is built on every trainable variable, also those that get no gradient (BERT's
    # pooler), so that its state has the same layout in a fresh run and in one that restores
    # a backup (BackupAndRestore builds it the same way before loading).
    strategy = model.distribute_strategy
    with strategy.scope():
        if not model.built:
            model.build()
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
