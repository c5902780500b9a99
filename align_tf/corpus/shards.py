"""The output folder of `align-tf embed`: Parquet shards, manifest.json and errors.jsonl.

    DIR/shard-<partition name>.parquet   columns id, embedding (, caption, text_embedding);
                                          its footer holds the partition's fingerprint, the
                                          model's and the inputs that failed (the shard's errors)
    DIR/manifest.json                     model, inputs, counts, dtype, engine, time
    DIR/errors.jsonl                      one {"id", "reason", "shard"} per input not embedded
    DIR/model/1/                          the SavedModel, when it was exported from a checkpoint

A shard is written to a hidden temporary name and renamed into place: a shard file that exists
is complete, so a rerun skips it. Its errors travel inside it, so nothing is lost or counted twice.
"""

from __future__ import annotations

import json
import os

import numpy as np

from align_tf.errors import ConfigError, CorpusOutputError

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
FORMAT = "align-tf-embeddings"
VERSION = 1
METADATA_KEY = b"align_tf"
DTYPES = ("float32", "float16")


def shard_file(name: str) -> str:
    return f"shard-{name}.parquet"


def write_shard(directory: str, name: str, ids, embeddings, *, info: dict, errors=(),
                captions=None, text_embeddings=None, dtype: str = "float32") -> str:
    """Write one shard atomically (temporary name, then rename). `info` (partition and model
    fingerprints, ...) and `errors` go into the Parquet footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    embeddings = np.asarray(embeddings, np.float32)
    columns = {"id": pa.array(list(ids), pa.string()),
               "embedding": _vectors(embeddings, dtype, info["dim"])}
    if captions is not None:
        columns["caption"] = pa.array(list(captions), pa.string())
        columns["text_embedding"] = _vectors(np.asarray(text_embeddings, np.float32), dtype,
                                             info["dim"])
    meta = dict(info, partition=name, rows=len(embeddings), errors=list(errors), dtype=dtype)
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(meta)})
    path = os.path.join(directory, shard_file(name))
    temporary = os.path.join(directory, f".{shard_file(name)}.tmp-{os.getpid()}")
    pq.write_table(table, temporary)
    os.replace(temporary, path)
    return path


def _vectors(array, dtype, dim):
    import pyarrow as pa

    array = array.reshape(-1, dim).astype(dtype)
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), dim)


def shard_info(path: str) -> dict:
    """The footer metadata of a shard (reads only the footer)."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in metadata:
        raise CorpusOutputError(f"{path}: not a shard written by align-tf embed (no footer "
                                "metadata)")
    return json.loads(metadata[METADATA_KEY])


def read_shard(path: str, columns=("id", "embedding")) -> dict:
    """{column: values}: `id` and `caption` as lists, embeddings as float32 arrays [rows, dim]."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=[c for c in columns])
    out = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if name in ("embedding", "text_embedding"):
            dim = column.type.list_size
            out[name] = column.flatten().to_numpy(zero_copy_only=False).astype(
                np.float32).reshape(-1, dim)
        else:
            out[name] = column.to_pylist()
    return out


def remove_stale_temporaries(directory: str) -> None:
    """Temporary shard files of a run that was killed mid-write."""
    for name in os.listdir(directory):
        if name.startswith(".shard-") and ".tmp-" in name:
            os.remove(os.path.join(directory, name))


def read_manifest(directory: str) -> dict | None:
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise CorpusOutputError(f"{path}: not an align-tf embed manifest (format "
                                f"{manifest.get('format')!r})")
    return manifest


def write_json_atomically(path: str, value) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".tmp", path)


def write_errors(directory: str, errors) -> None:
    path = os.path.join(directory, ERRORS)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for entry in errors:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def shard_paths(directory: str) -> list[str]:
    """The shards a finished `align-tf embed` folder lists in its manifest, in input order."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise CorpusOutputError(f"{directory}: no {MANIFEST}; not an `align-tf embed` output "
                                "folder")
    if manifest.get("status") != "complete":
        raise CorpusOutputError(f"{directory}: the embedding run did not finish (status "
                                f"{manifest.get('status')!r}); run the same `align-tf embed` "
                                "command again to complete it")
    return [os.path.join(directory, s["file"]) for s in manifest["shards"]]


def iter_embedding_shards(directory: str):
    """(embeddings float32 [rows, dim], metadata dicts) per shard of a finished embed folder,
    one shard in memory at a time. Metadata: {"key" (the shard's id; an index's own "id" is the
    row number), "path" (local image files), "caption"}."""
    for path in shard_paths(directory):
        info = shard_info(path)
        wanted = ["id", "embedding"] + (["caption"] if info.get("captions") else [])
        shard = read_shard(path, wanted)
        root = info.get("root")
        metadata = []
        for n, key in enumerate(shard["id"]):
            entry = {"key": key}
            if root and "://" not in root and info.get("kind") == "images":
                entry["path"] = os.path.join(root, key)
            if "caption" in shard:
                entry["caption"] = shard["caption"][n]
            metadata.append(entry)
        yield shard["embedding"], metadata
