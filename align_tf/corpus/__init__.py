"""Embedding corpora bigger than one machine: inputs planned into partitions, embedded by the
exported SavedModel in this process or on Ray Data actors, written as resumable Parquet shards.

Nothing here imports TensorFlow or Ray when imported: Ray loads only when `engine="ray"` runs,
TensorFlow when a model is resolved or loaded."""

from align_tf.corpus.embed import embed_corpus
from align_tf.corpus.shards import iter_embedding_shards, read_manifest, read_shard
from align_tf.corpus.sources import plan_partitions, read_partition

__all__ = ["embed_corpus", "iter_embedding_shards", "plan_partitions", "read_manifest",
           "read_partition", "read_shard"]
