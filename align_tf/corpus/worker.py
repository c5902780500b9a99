"""The embedding worker: loads the SavedModel once (or connects to a TF Serving endpoint) and turns
read partitions into Parquet shards. A Ray actor in `--engine ray`, a plain object in-process in
`--engine local`: the same class, the same code path.

Images go to the `embed_image` signature as raw bytes and captions to `embed_text` as strings,
so decoding and tokenizing happen in-graph exactly as TF Serving does them. A batch that fails
because of one input is split in halves until the input is found: that input is recorded with
the signature's own message and the others are embedded.
"""

from __future__ import annotations

import os
import pickle
import re
import time

import numpy as np

from align_tf.corpus.shards import write_shard
from align_tf.errors import ConfigError

# A test-only hook (tests/corpus/test_embed_ray.py), not a user option: while the file this
# variable names exists, a worker that has written a shard waits before taking the next one, so
# that an interrupted job is reliably found part-way (some shards written, others not).
HOLD_ENV = "ALIGN_TF_TEST_HOLD_AFTER_SHARD"


def read_partitions(batch: dict) -> dict:
    """Ray Data stage 1 (tasks): read each partition's raw items. A partition's items travel as
    one pickled value: one row per partition, whatever the images' sizes."""
    import json

    from align_tf.corpus.sources import read_partition

    payloads = []
    for text in batch["partition"]:
        partition = json.loads(text)
        items, errors = read_partition(partition)
        payloads.append(pickle.dumps({"partition": partition, "items": items, "errors": errors},
                                     protocol=pickle.HIGHEST_PROTOCOL))
    return {"payload": np.array(payloads, dtype=object)}


class SavedModelBackend:
    """The exported model's signatures, loaded in this process."""

    def __init__(self, saved_model_dir: str, threads: int | None = None):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokenizer's ops before loading)

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            # Actors sharing a GPU (--gpus-per-worker 0.5) must not each reserve all of it.
            tf.config.experimental.set_memory_growth(gpu, True)
        self._tf = tf
        loaded = tf.saved_model.load(saved_model_dir)
        self._image = loaded.signatures["embed_image"]
        self._text = loaded.signatures["embed_text"]
        self._loaded = loaded  # keeps the signatures' resources alive
        self.dim = int(self._image.structured_outputs["image_embeds"].shape[-1])

    def is_input_error(self, error) -> bool:
        # The decoder's and the signature's checks raise InvalidArgument; nothing else does.
        return isinstance(error, self._tf.errors.InvalidArgumentError)

    def embed_images(self, image_bytes: list[bytes]) -> np.ndarray:
        tensor = self._tf.constant(image_bytes, self._tf.string)
        return self._image(image_bytes=tensor)["image_embeds"].numpy()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        tensor = self._tf.constant([t.encode("utf-8") for t in texts], self._tf.string)
        return self._text(text=tensor)["text_embeds"].numpy()


class ServingBackend:
    """The same signatures on a TF Serving (or `align-tf serve`) endpoint, via AlignServingClient."""

    def __init__(self, url: str, model_name: str):
        import grpc

        from align_tf.errors import ServingError
        from align_tf.serving.client import AlignServingClient

        protocol = "rest" if url.startswith(("http://", "https://")) else "grpc"
        self._client = AlignServingClient(url, model_name=model_name, protocol=protocol)
        self._invalid = grpc.StatusCode.INVALID_ARGUMENT
        self._serving_error = ServingError
        self.dim = int(self.embed_texts(["a"]).shape[-1])

    def is_input_error(self, error) -> bool:
        return isinstance(error, self._serving_error) and error.code == self._invalid

    def embed_images(self, image_bytes: list[bytes]) -> np.ndarray:
        return self._client.embed_image(image_bytes)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self._client.embed_text(texts)


def error_reason(error) -> str:
    """The useful line of a TensorFlow / serving error: the failing check's own message."""
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in str(text).splitlines()]
    keep = [line for line in lines if line and not line.startswith(
        ("Graph execution error", "Detected at node", "<stack traces", "[[", "{{"))]
    reason = " ".join(keep) or str(error)
    reason = re.sub(r"\s*\[\[.*?\]\]", "", reason)
    reason = re.sub(r"\s*\[Op:[^\]]*\]", "", reason)
    found = re.search(r"assertion failed: \[(.*)\]", reason)
    return (found.group(1) if found else reason).strip()


class PartitionEmbedder:
    """Callable on Ray Data batches of read partitions (`read_partitions` output): embeds each
    partition in batches of `batch_size`, writes its shard, returns one summary row per shard."""

    def __init__(self, output_dir: str, info: dict, batch_size: int = 32, dtype: str = "float32",
                 saved_model: str | None = None, serving_url: str | None = None,
                 serving_model_name: str = "align", threads: int | None = None):
        if (saved_model is None) == (serving_url is None):
            raise ConfigError("give exactly one of saved_model= or serving_url=")
        self.backend = (SavedModelBackend(saved_model, threads) if saved_model
                        else ServingBackend(serving_url, serving_model_name))
        self.output_dir = output_dir
        self.info = dict(info, dim=info.get("dim") or self.backend.dim)
        self.batch_size = int(batch_size)
        self.dtype = dtype
        self.on_batch = None  # the local engine's progress bar

    def __call__(self, batch: dict) -> dict:
        rows = {"shard": [], "rows": [], "errors": []}
        for payload in batch["payload"]:
            read = pickle.loads(payload)
            name, count, errors = self.embed_partition(read["partition"], read["items"],
                                                       read["errors"])
            rows["shard"].append(name)
            rows["rows"].append(count)
            rows["errors"].append(len(errors))
            while os.environ.get(HOLD_ENV) and os.path.exists(os.environ[HOLD_ENV]):
                time.sleep(0.05)
        return {k: np.array(v) for k, v in rows.items()}

    def embed_partition(self, partition: dict, items, read_errors):
        """Embed one read partition and write its shard: (name, rows written, errors)."""
        from align_tf.corpus.sources import partition_fingerprint

        failed = {e["id"]: e["reason"] for e in read_errors}
        kept, vectors = [], []  # kept: the (id, bytes, caption) items that embedded
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            embeds = self._isolate(self.backend.embed_images, [c[1] for c in chunk],
                                   [c[0] for c in chunk], failed)
            for item, vector in zip(chunk, embeds):
                if vector is not None:
                    kept.append(item)
                    vectors.append(vector)
            if self.on_batch is not None:
                self.on_batch(len(chunk))
        dim = self.info["dim"]
        with_captions = any(c[2] is not None for c in items)
        captions = [c[2] or "" for c in kept] if with_captions else None
        text_vectors = None
        if with_captions:
            parts = [self.backend.embed_texts(captions[s:s + self.batch_size])
                     for s in range(0, len(captions), self.batch_size)]
            text_vectors = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
        # Errors in input order (inputs that could not be read first, as they were found).
        order = {c[0]: n for n, c in enumerate(items)}
        errors = sorted(({"id": k, "reason": r} for k, r in failed.items()),
                        key=lambda e: order.get(e["id"], -1))
        info = dict(self.info, partition_fingerprint=partition_fingerprint(partition),
                    kind=partition["kind"], root=partition.get("root"), input=partition["input"],
                    captions=with_captions)
        write_shard(self.output_dir, partition["name"], [c[0] for c in kept],
                    np.stack(vectors) if vectors else np.zeros((0, dim), np.float32),
                    info=info, errors=errors, captions=captions, text_embeddings=text_vectors,
                    dtype=self.dtype)
        return partition["name"], len(kept), errors

    def _isolate(self, embed, inputs, keys, failed):
        """Embeddings for `inputs` (None where an input fails on its own), halving a failing
        batch until the failing inputs are found. Errors that are not about an input (out of
        memory, a lost connection) are raised: they must fail the job, not the image."""
        try:
            return list(embed(inputs))
        except Exception as error:  # noqa: BLE001  (filtered just below)
            if not self.backend.is_input_error(error):
                raise
            if len(inputs) == 1:
                failed[keys[0]] = error_reason(error)
                return [None]
        middle = len(inputs) // 2
        return (self._isolate(embed, inputs[:middle], keys[:middle], failed)
                + self._isolate(embed, inputs[middle:], keys[middle:], failed))
