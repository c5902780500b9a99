"""`tf.distribute` strategies by name, and which worker is the chief (the one that writes)."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from align_tf.errors import ConfigError
from align_tf.training.options import STRATEGIES



def get_strategy(name: str = "default", tpu: str | None = None):
    """`default` (one device), `mirrored` (every local GPU, or the CPU), `multi_worker`
    (MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG), `tpu` (TPUStrategy; `tpu`
    names the TPU, default: the local one / from the environment)."""
    name = name.lower().replace("-", "_")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("strategy 'multi_worker' reads the cluster from TF_CONFIG, which is not set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"strategy must be one of {STRATEGIES}, got {name!r}")


def worker_task() -> tuple[str | None, int]:
    """(task type, index) from TF_CONFIG, or (None, 0) outside a cluster."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task") or {}
    return task.get("type"), int(task.get("index", 0))


def is_chief(strategy) -> bool:
    """The worker that writes checkpoints and logs: the `chief` task, or worker 0 when the
    cluster has no chief; always True outside multi-worker training."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, index = worker_task()
    if task_type is None or task_type == "chief":
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return task_type == "worker" and index == 0 and "chief" not in cluster
