"""Cross-modal search: an on-disk index of image embeddings, queried by text, image or both.

Index folder layout (format "align-tf-embedding-index", version 1):

    index.json          {"format", "version", "dim", "dtype" ("float32" | "float16"), "count",
                         "normalized", "model", "shards": [{"file", "count"}, ...]}
    embeddings-00000.npy  one .npy array [rows, dim] per shard, rows in index order
    metadata.jsonl      one JSON object per row, in the same order ({"path": ...} for images)

Exact search reads the shards memory-mapped and scores them in chunks, so memory is bounded by
the chunk size, not the index size. `backend="faiss"` uses an HNSW inner-product index instead
(faiss-cpu, optional), kept next to the shards as `faiss-hnsw.index`; `backend="ivfpq"` a
compressed IVF-PQ index (`build_ivfpq`, kept as `faiss-ivfpq.index`) for corpora past memory.
"""

from __future__ import annotations

import json
import os

import numpy as np

from align_tf.applications.embedder import l2_normalize
from align_tf.errors import ConfigError, IndexFormatError  # noqa: F401  (public here too)
from align_tf.progress import progress_bar

INDEX_FORMAT = "align-tf-embedding-index"
INDEX_VERSION = 1
MANIFEST = "index.json"
METADATA = "metadata.jsonl"
FAISS_FILE = "faiss-hnsw.index"
IVFPQ_FILE = "faiss-ivfpq.index"
BACKENDS = ("exact", "faiss", "ivfpq")
DTYPES = ("float32", "float16")


def compose_query(image_embed, plus=(), minus=(), weight: float = 1.0):
    """The paper's image+text query: image embedding + weight * (sum of `plus` text embeddings
    - sum of `minus` ones), re-normalised. All inputs are [D] or [n, D] normalised embeddings."""
    query = l2_normalize(image_embed).reshape(-1)
    for embeds, sign in ((plus, 1.0), (minus, -1.0)):
        embeds = np.asarray(embeds, np.float32).reshape(-1, query.shape[0])
        if len(embeds):
            query = query + sign * weight * l2_normalize(embeds).sum(axis=0)
    return l2_normalize(query)


def merge_top_k(best_scores, best_ids, scores, ids, k):
    """Keep the k largest of (best, new) per row; rows stay unsorted until `sort_top_k`."""
    scores = np.concatenate([best_scores, scores], axis=1)
    ids = np.concatenate([best_ids, np.broadcast_to(ids, (len(scores), ids.shape[-1]))], axis=1)
    if scores.shape[1] > k:
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, keep, axis=1)
        ids = np.take_along_axis(ids, keep, axis=1)
    return scores, ids


def sort_top_k(scores, ids):
    # Highest score first; equal scores by lower row id, so results are deterministic.
    order = np.lexsort((ids, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def recall_at_k(approx_ids, exact_ids) -> float:
    """Share of the exact top-k ids that the approximate top-k also returns."""
    approx_ids, exact_ids = np.asarray(approx_ids), np.asarray(exact_ids)
    found = sum(len(set(a) & set(e)) for a, e in zip(approx_ids, exact_ids))
    return found / exact_ids.size


class EmbeddingIndex:
    """Embeddings (rows, in shards) plus one metadata dict per row.

    Create one with `EmbeddingIndex.build(images, embedder, directory)` (resumable, batched,
    constant memory), `EmbeddingIndex.from_embeddings(array, metadata)`, or
    `EmbeddingIndex.load(directory)`. Query with `search(vectors)`, or with `query(text=...)`,
    `query(image=...)`, `query(image=..., plus_text=..., minus_text=...)` given an embedder
    (`align_tf.evaluation.Embedder`: a model and its processor).
    """

    def __init__(self, dim: int, dtype: str = "float32", normalized: bool = True,
                 model: str | None = None, embedder=None):
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.dim = int(dim)
        self.dtype = dtype
        self.normalized = normalized
        self.model = model
        self.embedder = embedder
        self.shards: list[np.ndarray] = []
        self.metadata: list[dict] = []
        self.directory: str | None = None
        self._persisted = 0      # leading shards already written to `directory`
        self._faiss = None
        self._ivfpq = None

    def __len__(self):
        return sum(len(s) for s in self.shards)

    def __repr__(self):
        return (f"EmbeddingIndex({len(self)} x {self.dim}, {self.dtype}, "
                f"{len(self.shards)} shards, model={self.model!r})")

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_embeddings(cls, embeddings, metadata=None, dtype: str = "float32",
                        normalized: bool = True, model: str | None = None, embedder=None):
        embeddings = np.asarray(embeddings)
        index = cls(embeddings.shape[1], dtype, normalized, model, embedder)
        index.add(embeddings, metadata)
        return index

    def add(self, embeddings, metadata=None):
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ConfigError(f"embeddings: expected [rows, {self.dim}], got {embeddings.shape}")
        if metadata is None:
            metadata = [{} for _ in range(len(embeddings))]
        metadata = list(metadata)
        if len(metadata) != len(embeddings):
            raise ConfigError(f"metadata: {len(metadata)} entries for {len(embeddings)} rows")
        self.shards.append(embeddings.astype(self.dtype, copy=False))
        self.metadata.extend(metadata)
        self._faiss = None

    @classmethod
    def build_from_shards(cls, shards, directory: str, dtype: str = "float32",
                          model: str | None = None):
        """Write an index folder from `(embeddings [rows, D], metadata dicts)` pairs without
        running a model (e.g. `align_tf.corpus.iter_embedding_shards`), one shard in memory at a
        time: each becomes an index shard file as it arrives."""
        os.makedirs(directory, exist_ok=True)
        _remove_index_files(directory)
        index = cls(0, dtype, True, model)
        index.directory = directory
        for embeddings, metadata in shards:
            embeddings = np.asarray(embeddings)
            if not index.dim:
                index.dim = int(embeddings.shape[1])
            if embeddings.ndim != 2 or embeddings.shape[1] != index.dim:
                raise IndexFormatError(f"shard {len(index.shards)}: expected [rows, {index.dim}] "
                                       f"embeddings, got {embeddings.shape}")
            if len(metadata) != len(embeddings):
                raise IndexFormatError(f"shard {len(index.shards)}: {len(metadata)} metadata "
                                       f"entries for {len(embeddings)} rows")
            if len(embeddings):
                index._append_shard(embeddings, metadata)
        index._write_manifest()
        return index

    @classmethod
    def build(cls, images, embedder, directory: str, dtype: str = "float32",
              batch_size: int | None = None, shard_size: int = 4096, progress: bool = True,
              model: str | None = None, metadata=None, resume: bool = True):
        """Embed `images` (paths, or anything the processor takes with `metadata` given) into
        `directory`, one shard file per `shard_size` images. Memory holds one shard at a time.
        If `directory` already holds a partial build of the same image list, it continues
        after the last complete shard (`resume=False` starts over)."""
        images = list(images)
        if metadata is None:
            metadata = [{"path": str(p)} for p in images]
        metadata = list(metadata)
        if len(metadata) != len(images):
            raise ConfigError(f"metadata: {len(metadata)} entries for {len(images)} images")
        os.makedirs(directory, exist_ok=True)
        manifest_path = os.path.join(directory, MANIFEST)
        if resume and os.path.exists(manifest_path):
            index = cls.load(directory, embedder=embedder)
            done = len(index)
            if index.dtype != dtype:
                raise IndexFormatError(f"{directory}: holds a {index.dtype} index; cannot "
                                       f"resume it as {dtype} (use a new folder)")
            if model is not None and index.model not in (None, model):
                raise IndexFormatError(f"{directory}: built with model {index.model!r}; cannot "
                                       f"continue it with {model!r} (use a new folder)")
            if index.metadata != metadata[:done]:
                raise IndexFormatError(
                    f"{directory}: holds an index of other images ({done} rows, first "
                    f"{index.metadata[:1]}); pass resume=False (--restart) or a new folder")
        else:
            _remove_index_files(directory)
            index = cls(getattr(embedder, "dim", None) or 0, dtype, True, model, embedder)
            index.directory = directory
            done = 0
        if model is not None:
            index.model = model
        bar = progress_bar(len(images), "indexing images", progress, unit="img", initial=done)
        try:
            for start in range(done, len(images), shard_size):
                stop = min(start + shard_size, len(images))
                embeds = embedder.embed_images(images[start:stop], batch_size=batch_size,
                                               on_batch=bar.update)
                if not index.dim:
                    index.dim = int(embeds.shape[1])
                index._append_shard(embeds, metadata[start:stop])
        finally:
            bar.close()
        return index

    def _append_shard(self, embeddings, metadata):
        """Write one shard, then its metadata, then the manifest: the manifest is the commit
        point, so an interrupted build resumes from the last shard it lists."""
        number = len(self.shards)
        name = f"embeddings-{number:05d}.npy"
        path = os.path.join(self.directory, name)
        np.save(path + ".tmp.npy", np.asarray(embeddings, dtype=self.dtype))
        os.replace(path + ".tmp.npy", path)
        with open(os.path.join(self.directory, METADATA), "a", encoding="utf-8") as f:
            for entry in metadata:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.shards.append(np.load(path, mmap_mode="r"))
        self.metadata.extend(metadata)
        self._persisted = len(self.shards)
        self._write_manifest()

    # -- saving / loading ----------------------------------------------------------------
    def _manifest(self):
        return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "dim": self.dim,
                "dtype": self.dtype, "count": len(self), "normalized": self.normalized,
                "model": self.model,
                "shards": [{"file": f"embeddings-{i:05d}.npy", "count": len(s)}
                           for i, s in enumerate(self.shards)]}

    def _write_manifest(self):
        path = os.path.join(self.directory, MANIFEST)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self._manifest(), f, indent=2)
        os.replace(path + ".tmp", path)

    def save(self, directory: str) -> str:
        """Write the documented folder layout (shard by shard, so memory stays bounded).
        Saving to the folder the index came from writes only the shards added since."""
        os.makedirs(directory, exist_ok=True)
        if self.directory and os.path.abspath(directory) == os.path.abspath(self.directory):
            kept = self._persisted
        else:
            _remove_index_files(directory)
            kept = 0
        kept_rows = sum(len(s) for s in self.shards[:kept])
        pending = list(zip(self.shards[kept:], _split(self.metadata[kept_rows:],
                                                       [len(s) for s in self.shards[kept:]])))
        self.shards, self.metadata = self.shards[:kept], self.metadata[:kept_rows]
        self.directory, self._persisted = directory, kept
        for shard, metadata in pending:
            self._append_shard(shard, metadata)
        self._write_manifest()
        return directory

    @classmethod
    def load(cls, directory: str, embedder=None, mmap: bool = True):
        """Open an index folder; shards stay memory-mapped unless `mmap=False`."""
        manifest_path = os.path.join(directory, MANIFEST)
        if not os.path.exists(manifest_path):
            raise IndexFormatError(f"{directory}: no {MANIFEST}; not an align-tf index folder")
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("format") != INDEX_FORMAT or manifest.get("version") != INDEX_VERSION:
            raise IndexFormatError(
                f"{manifest_path}: expected format {INDEX_FORMAT!r} version {INDEX_VERSION}, got "
                f"{manifest.get('format')!r} version {manifest.get('version')!r}")
        index = cls(manifest["dim"], manifest["dtype"], manifest.get("normalized", True),
                    manifest.get("model"), embedder)
        index.directory = directory
        index._persisted = len(manifest["shards"])
        for shard in manifest["shards"]:
            array = np.load(os.path.join(directory, shard["file"]), mmap_mode="r" if mmap else None)
            if array.shape != (shard["count"], index.dim):
                raise IndexFormatError(f"{directory}/{shard['file']}: shape {array.shape}, "
                                       f"manifest says ({shard['count']}, {index.dim})")
            index.shards.append(array)
        count = manifest["count"]
        # Lines past `count` belong to a shard whose build was interrupted: drop them.
        metadata_path = os.path.join(directory, METADATA)
        lines = []
        if os.path.exists(metadata_path):
            with open(metadata_path, encoding="utf-8") as f:
                for line in f:
                    if len(lines) == count:
                        break
                    lines.append(line)
        if len(lines) != count:
            raise IndexFormatError(f"{metadata_path}: {len(lines)} rows, manifest says {count}")
        index.metadata = [json.loads(line) for line in lines]
        if os.path.exists(metadata_path) and os.path.getsize(metadata_path) != sum(
                len(line.encode("utf-8")) for line in lines):
            with open(metadata_path, "w", encoding="utf-8") as f:
                f.writelines(lines)
        return index

    # -- searching -----------------------------------------------------------------------
    def vectors(self) -> np.ndarray:
        """All rows as one float32 array in memory (for small indexes and checks)."""
        if not self.shards:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([np.asarray(s, np.float32) for s in self.shards])

    def rows(self, ids) -> np.ndarray:
        """The float32 embeddings of rows `ids` (global row numbers)."""
        ids = np.asarray(ids, np.int64)
        starts = np.cumsum([0] + [len(s) for s in self.shards])
        out = np.empty((len(ids), self.dim), np.float32)
        for n, i in enumerate(ids):
            shard = int(np.searchsorted(starts, i, side="right")) - 1
            out[n] = self.shards[shard][i - starts[shard]]
        return out

    def search(self, queries, k: int = 10, chunk_size: int = 65536, backend: str = "exact"):
        """Top-k rows by dot product for each query: (scores [Q, k], ids [Q, k]), best first.
        "exact" scores `chunk_size` rows at a time (float32 arithmetic for float16 storage)."""
        queries = np.asarray(queries, np.float32)
        single = queries.ndim == 1
        queries = queries.reshape(-1, self.dim)
        k = min(int(k), len(self))
        if backend == "faiss":
            scores, ids = self._faiss_index().search(np.ascontiguousarray(queries), k)
        elif backend == "ivfpq":
            scores, ids = self._ivfpq_index().search(np.ascontiguousarray(queries), k)
        elif backend == "exact":
            scores, ids = self._exact_search(queries, k, chunk_size)
        else:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
        return (scores[0], ids[0]) if single else (scores, ids)

    def _exact_search(self, queries, k, chunk_size):
        best_scores = np.full((len(queries), 0), -np.inf, np.float32)
        best_ids = np.zeros((len(queries), 0), np.int64)
        offset = 0
        for shard in self.shards:
            for start in range(0, len(shard), chunk_size):
                chunk = np.asarray(shard[start:start + chunk_size], np.float32)
                scores = queries @ chunk.T
                ids = np.arange(offset + start, offset + start + len(chunk))[None, :]
                best_scores, best_ids = merge_top_k(best_scores, best_ids, scores, ids, k)
                del chunk, scores
            offset += len(shard)
        return sort_top_k(best_scores, best_ids)

    def _faiss_index(self, m: int = 32, ef_search: int = 128):
        faiss = _import_faiss("faiss")
        if self._faiss is not None:
            return self._faiss
        path = os.path.join(self.directory, FAISS_FILE) if self.directory else None
        if path and os.path.exists(path):
            index = faiss.read_index(path)
            if index.ntotal != len(self):
                index = None
        else:
            index = None
        if index is None:
            index = faiss.IndexHNSWFlat(self.dim, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            for shard in self.shards:
                index.add(np.ascontiguousarray(shard, np.float32))
            if path:
                faiss.write_index(index, path)
        index.hnsw.efSearch = ef_search
        self._faiss = index
        return index

    def approximate_recall(self, queries, k: int = 10, backend: str = "faiss") -> float:
        """recall@k of an approximate backend ("faiss" HNSW or "ivfpq") against exact search,
        for these queries."""
        _, exact = self.search(queries, k, backend="exact")
        _, approx = self.search(queries, k, backend=backend)
        return recall_at_k(approx, exact)

    def build_ivfpq(self, nlist: int | None = None, m: int | None = None, nbits: int = 8,
                    nprobe: int | None = None, train_size: int = 100_000, seed: int = 0):
        """A faiss IVF-PQ index (inner product) over all rows, written as `faiss-ivfpq.index`:
        `m` bytes per row (at 8 bits) instead of 4 * D, for corpora whose vectors do not fit in
        memory. Trained on up to `train_size` rows sampled from every shard, then filled one
        shard at a time. Defaults: nlist ~ 4 sqrt(rows) (at least 39 training rows per list),
        m the largest divisor of D up to D / 10, nprobe = nlist / 8. Small indexes get fewer
        lists and bits, as k-means needs more rows than centroids."""
        faiss = _import_faiss("ivfpq")
        rows = len(self)
        if rows == 0:
            raise IndexFormatError("build_ivfpq: the index is empty")
        sample = self._sample_rows(train_size, seed)
        nlist = int(nlist or max(1, min(65536, round(4 * np.sqrt(rows)))))
        nlist = max(1, min(nlist, len(sample) // 39 or 1))
        m = int(m or max(d for d in range(1, max(1, self.dim // 10) + 1) if self.dim % d == 0))
        if self.dim % m:
            raise ConfigError(f"m={m} must divide the embedding size {self.dim}")
        nbits = int(max(1, min(nbits, int(np.log2(len(sample))))))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        for shard in self.shards:
            index.add(np.ascontiguousarray(shard, np.float32))
        index.nprobe = int(nprobe or max(1, nlist // 8))
        if self.directory:
            faiss.write_index(index, os.path.join(self.directory, IVFPQ_FILE))
        self._ivfpq = index
        return {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": index.nprobe,
                "trained_on": len(sample), "bytes_per_row": m * nbits / 8}

    def _ivfpq_index(self):
        if self._ivfpq is not None:
            return self._ivfpq
        faiss = _import_faiss("ivfpq")
        path = os.path.join(self.directory, IVFPQ_FILE) if self.directory else None
        if not path or not os.path.exists(path):
            raise IndexFormatError(f"{self.directory}: no {IVFPQ_FILE}; build it with "
                                   "`align-tf index build ... --ivfpq` (or index.build_ivfpq())")
        index = faiss.read_index(path)
        if index.ntotal != len(self):
            raise IndexFormatError(f"{path}: holds {index.ntotal} rows, the index {len(self)}; "
                                   "build it again")
        self._ivfpq = index
        return index

    def _sample_rows(self, size: int, seed: int) -> np.ndarray:
        """Up to `size` rows, the same share drawn at random from every shard, float32."""
        rng = np.random.default_rng(seed)
        share = min(1.0, size / max(1, len(self)))
        parts = []
        for shard in self.shards:
            take = min(len(shard), int(np.ceil(share * len(shard))))
            picked = np.sort(rng.choice(len(shard), take, replace=False))
            parts.append(np.asarray(shard[picked], np.float32))
        return np.ascontiguousarray(np.concatenate(parts)[:size])

    # -- queries by text / image ---------------------------------------------------------
    def query(self, text=None, image=None, plus_text=(), minus_text=(), weight: float = 1.0,
              k: int = 10, backend: str = "exact", embedder=None, text_templates=None):
        """Top-k hits for one query: a text, an image, or an image with texts added
        (`plus_text`) and subtracted (`minus_text`). Returns a list of dicts
        `{"rank", "score", "id", **metadata}`, best first.

        `text_templates` (e.g. `["a {} circle", "a {} square"]`) embeds every text of the
        query in each template and averages them (prompt ensembling): a bare word such as
        "red" is far from the captions a model was trained on, and in context the parts the
        plus and minus texts share cancel out."""
        embedder = embedder or self.embedder
        if embedder is None:
            raise ConfigError("query by text or image needs an embedder (a model and processor): "
                             "EmbeddingIndex.load(folder, embedder=Embedder(model, processor))")
        if (text is None) == (image is None):
            raise ConfigError("query: give exactly one of text= or image=")
        if text is not None:
            if plus_text or minus_text:
                raise ConfigError("plus_text / minus_text modify an image query, not a text one")
            vector = embed_texts_in_templates(embedder, [text], text_templates)[0]
        else:
            vector = embedder.embed_images([image])[0]
            plus, minus = _as_list(plus_text), _as_list(minus_text)
            if plus or minus:
                embeds = embed_texts_in_templates(embedder, plus + minus, text_templates)
                vector = compose_query(vector, embeds[:len(plus)], embeds[len(plus):], weight)
        scores, ids = self.search(vector, k, backend=backend)
        return self.hits(scores, ids)

    def hits(self, scores, ids):
        return [{"rank": rank, "score": float(score), "id": int(i), **self.metadata[int(i)]}
                for rank, (score, i) in enumerate(zip(scores, ids), start=1) if i >= 0]


def embed_texts_in_templates(embedder, texts, templates=None) -> np.ndarray:
    """[len(texts), D]: each text's embedding, or with templates the normalised mean of its
    embeddings in every template (the zero-shot classifier's prompt ensembling)."""
    if not templates:
        return embedder.embed_texts(texts)
    from align_tf.applications.templates import resolve_templates
    from align_tf.applications.zero_shot import class_prompts, ensemble_class_embeddings

    templates = resolve_templates(templates)
    return ensemble_class_embeddings(embedder.embed_texts(class_prompts(texts, templates)),
                                     len(texts))


def _import_faiss(backend: str):
    try:
        import faiss
    except ImportError as e:
        raise ImportError(f"backend={backend!r} needs faiss: pip install faiss-cpu "
                          "(or align-tf[search])") from e
    return faiss


def _remove_index_files(directory):
    for name in os.listdir(directory):
        if name in (MANIFEST, METADATA, FAISS_FILE, IVFPQ_FILE) or name.startswith("embeddings-"):
            os.remove(os.path.join(directory, name))


def _split(items, sizes):
    parts, start = [], 0
    for size in sizes:
        parts.append(items[start:start + size])
        start += size
    return parts


def _as_list(texts):
    return [texts] if isinstance(texts, str) else list(texts or ())

