"""Embedding corpora bigger than one machine: inputs planned into partitions, embedded by the
exported SavedModel in this process or on Ray Data actors, written as resumable Parquet shards.

Ray is imported only when `engine="ray"` runs: `import align_tf.corpus` does not import it."""

import importlib

_EXPORTS = {
    "embed_corpus": "align_tf.corpus.embed",
    "plan_partitions": "align_tf.corpus.sources",
    "read_partition": "align_tf.corpus.sources",
    "iter_embedding_shards": "align_tf.corpus.shards",
    "read_shard": "align_tf.corpus.shards",
    "read_manifest": "align_tf.corpus.shards",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'align_tf.corpus' has no attribute {name!r}")


def __dir__():
    return __all__
