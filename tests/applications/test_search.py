"""EmbeddingIndex: chunked exact search equals a full matrix product with bounded memory,
float16 storage, save/load, resumable building, image+text composition, faiss recall."""

import importlib.util
import json
import os
import tracemalloc
import zlib

import numpy as np
import pytest

from align_tf.applications.search import EmbeddingIndex, IndexFormatError, compose_query, recall_at_k


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class HashEmbedder:
    """Deterministic stand-in: an item's embedding is seeded by its name (crc32)."""

    def __init__(self, dim=16, fail_after_calls=None):
        self.dim = dim
        self.images_embedded = 0
        self.calls = 0
        self.fail_after_calls = fail_after_calls

    def vector(self, item):
        rng = np.random.default_rng(zlib.crc32(str(item).encode()))
        return unit(rng.normal(size=self.dim))

    def embed_images(self, images, batch_size=None, progress=False, desc="", on_batch=None):
        self.calls += 1
        if self.fail_after_calls is not None and self.calls > self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        self.images_embedded += len(images)
        if on_batch:
            on_batch(len(images))
        return np.stack([self.vector(i) for i in images]).astype(np.float32)

    def embed_texts(self, texts, **kwargs):
        return np.stack([self.vector("text:" + t) for t in texts]).astype(np.float32)


def test_chunked_exact_search_of_200k_vectors_matches_full_product(tmp_path):
    n, dim, k = 200_000, 640, 10
    rng = np.random.default_rng(0)
    vectors = rng.random((n, dim), dtype=np.float32) - 0.5
    queries = rng.random((8, dim), dtype=np.float32) - 0.5
    full = queries @ vectors.T                                   # the plain full product
    expected_ids = np.argsort(-full, axis=1, kind="stable")[:, :k]
    expected_scores = np.take_along_axis(full, expected_ids, axis=1)
    scores, ids = EmbeddingIndex.from_embeddings(vectors, normalized=False).search(
        queries, k=k, chunk_size=10_000)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-4)

    # float16 storage on disk, memory-mapped: each chunk is converted to float32 on its own,
    # so the heap holds one chunk (10,000 x 640 x 4 B = 24 MiB), never the index (488 MiB).
    vectors16 = vectors.astype(np.float16)
    del vectors, full
    EmbeddingIndex.from_embeddings(vectors16, dtype="float16",
                                   normalized=False).save(str(tmp_path / "f16"))
    full16 = queries @ vectors16.astype(np.float32).T
    expected16 = np.argsort(-full16, axis=1, kind="stable")[:, :k]
    del vectors16, full16
    index16 = EmbeddingIndex.load(str(tmp_path / "f16"))
    assert os.path.getsize(tmp_path / "f16" / "embeddings-00000.npy") < n * dim * 2 + 1024
    tracemalloc.start()
    scores16, ids16 = index16.search(queries, k=k, chunk_size=10_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(ids16, expected16)
    chunk_bytes = 10_000 * dim * 4
    print(f"\npeak heap during chunked float16 search of {n}x{dim}: {peak / 2**20:.1f} MiB "
          f"(chunk {chunk_bytes / 2**20:.1f} MiB, index as float32 {n * dim * 4 / 2**20:.0f} MiB)")
    assert peak < 2.5 * chunk_bytes
    # Most of the float16 top-10 is the float32 top-10.
    assert recall_at_k(ids16, expected_ids) > 0.9


def test_save_load_round_trip_and_format(tmp_path):
    vectors = unit(np.random.default_rng(1).normal(size=(25, 16)))
    meta = [{"path": f"img{i}.png", "caption": f"number {i}"} for i in range(25)]
    index = EmbeddingIndex.from_embeddings(vectors[:10], meta[:10], model="some/model")
    index.add(vectors[10:], meta[10:])
    index.save(str(tmp_path / "idx"))
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest == {"format": "align-tf-embedding-index", "version": 1, "dim": 16,
                        "dtype": "float32", "count": 25, "normalized": True,
                        "model": "some/model",
                        "shards": [{"file": "embeddings-00000.npy", "count": 10},
                                   {"file": "embeddings-00001.npy", "count": 15}]}
    lines = (tmp_path / "idx" / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == meta
    loaded = EmbeddingIndex.load(str(tmp_path / "idx"))
    np.testing.assert_array_equal(loaded.vectors(), vectors)
    assert loaded.metadata == meta and loaded.model == "some/model"
    np.testing.assert_array_equal(np.load(tmp_path / "idx" / "embeddings-00001.npy"),
                                  vectors[10:])
    # Rows added to a loaded index are appended as a new shard when saved in place.
    loaded.add(vectors[:3], meta[:3])
    loaded.save(str(tmp_path / "idx"))
    again = EmbeddingIndex.load(str(tmp_path / "idx"))
    assert len(again) == 28 and len(again.shards) == 3 and again.metadata[25:] == meta[:3]
    np.testing.assert_array_equal(again.vectors()[25:], vectors[:3])
    np.testing.assert_array_equal(again.rows([0, 24, 25, 27]), vectors[[0, 24, 0, 2]])
    with pytest.raises(IndexFormatError, match="not an align-tf index"):
        EmbeddingIndex.load(str(tmp_path))


def test_resumable_build_continues_after_interruption(tmp_path):
    images = [f"photo_{i}.jpg" for i in range(10)]
    folder = str(tmp_path / "idx")
    with pytest.raises(KeyboardInterrupt):
        EmbeddingIndex.build(images, HashEmbedder(fail_after_calls=2), folder, shard_size=3,
                             progress=False)
    assert len(EmbeddingIndex.load(folder)) == 6                 # two complete shards
    # A half-written shard's metadata (crash before the manifest) is dropped on resume.
    with open(os.path.join(folder, "metadata.jsonl"), "a") as f:
        f.write(json.dumps({"path": "photo_6.jpg"}) + "\n")
    embedder = HashEmbedder()
    resumed = EmbeddingIndex.build(images, embedder, folder, shard_size=3, progress=False)
    assert embedder.images_embedded == 4                         # only the missing ones
    fresh = EmbeddingIndex.build(images, HashEmbedder(), str(tmp_path / "fresh"), shard_size=3,
                                 progress=False)
    np.testing.assert_array_equal(resumed.vectors(), fresh.vectors())
    assert EmbeddingIndex.load(folder).metadata == [{"path": p} for p in images]
    # Other images in the same folder: refuse, rather than mix two collections.
    with pytest.raises(IndexFormatError, match="other images"):
        EmbeddingIndex.build(["x.jpg"] + images, HashEmbedder(), folder, progress=False)


def test_build_memory_does_not_grow_with_the_number_of_images(tmp_path):
    def peak_for(n):
        images = [f"i{j}" for j in range(n)]
        tracemalloc.start()
        EmbeddingIndex.build(images, FastEmbedder(), str(tmp_path / f"n{n}"), shard_size=500,
                             progress=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    class FastEmbedder(HashEmbedder):
        def embed_images(self, images, batch_size=None, progress=False, desc="", on_batch=None):
            return np.ones((len(images), 2048), np.float32)

    small, large = peak_for(1000), peak_for(6000)
    print(f"\nbuild peak heap: 1,000 images {small / 2**20:.1f} MiB, "
          f"6,000 images {large / 2**20:.1f} MiB (6,000 x 2048 float32 = 47 MiB)")
    assert large < small + 8 * 2**20


def test_compose_query_is_image_plus_minus_weighted_text():
    rng = np.random.default_rng(2)
    image, red, blue = unit(rng.normal(size=(3, 8)))
    q = compose_query(image, plus=[red], minus=[blue], weight=0.7)
    by_hand = image + 0.7 * red - 0.7 * blue
    np.testing.assert_allclose(q, by_hand / np.linalg.norm(by_hand), atol=1e-6)
    np.testing.assert_allclose(compose_query(image), image, atol=1e-6)


def test_query_by_text_image_and_composition():
    embedder = HashEmbedder(dim=32)
    names = [f"img{i}" for i in range(50)]
    index = EmbeddingIndex.from_embeddings(embedder.embed_images(names),
                                           [{"path": n} for n in names], embedder=embedder)
    hits = index.query(image="img7", k=3)
    assert hits[0]["path"] == "img7" and hits[0]["rank"] == 1
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    text_hits = index.query(text="something", k=50)
    expected = np.argsort(-(index.vectors() @ embedder.embed_texts(["something"])[0]))
    assert [h["id"] for h in text_hits] == list(expected)
    # Composition moves the query: img7 plus a strong pull toward img3 finds img3.
    target = embedder.vector("img3")
    q = compose_query(embedder.vector("img7"), plus=[4 * target])
    assert index.hits(*index.search(q, k=1))[0]["path"] == "img3"
    # Text templates: each text's mean embedding over the templates, normalised (by hand).
    templated = index.query(image="img7", plus_text="up", minus_text="down",
                            text_templates=["a {} b", "{} c"], k=50)
    def in_templates(word):
        mean = unit(embedder.embed_texts([f"a {word} b", f"{word} c"])).mean(axis=0)
        return mean / np.linalg.norm(mean)
    q = compose_query(embedder.vector("img7"), [in_templates("up")], [in_templates("down")])
    assert [h["id"] for h in templated] == list(np.argsort(-(index.vectors() @ q)))
    with pytest.raises(ValueError, match="exactly one"):
        index.query(text="a", image="img1")


def test_float16_storage_halves_the_file_and_keeps_the_ranking(tmp_path):
    vectors = unit(np.random.default_rng(3).normal(size=(2000, 64)))
    for dtype in ("float32", "float16"):
        EmbeddingIndex.from_embeddings(vectors, dtype=dtype).save(str(tmp_path / dtype))
    size32 = os.path.getsize(tmp_path / "float32" / "embeddings-00000.npy")
    size16 = os.path.getsize(tmp_path / "float16" / "embeddings-00000.npy")
    assert size16 < 0.51 * size32
    queries = vectors[:20]
    _, ids32 = EmbeddingIndex.load(str(tmp_path / "float32")).search(queries, 5)
    _, ids16 = EmbeddingIndex.load(str(tmp_path / "float16")).search(queries, 5)
    np.testing.assert_array_equal(ids16[:, 0], np.arange(20))
    assert recall_at_k(ids16, ids32) > 0.95


def test_faiss_backend_recall_against_exact(tmp_path):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    # Clustered like real embeddings (100 topics), 10,000 x 128.
    centers = unit(rng.normal(size=(100, 128)))
    vectors = unit(centers[rng.integers(0, 100, 10_000)] + 0.6 * rng.normal(size=(10_000, 128))
                   / np.sqrt(128) * 4)
    index = EmbeddingIndex.from_embeddings(vectors)
    index.save(str(tmp_path / "idx"))
    queries = unit(centers[rng.integers(0, 100, 200)] + 0.5 * rng.normal(size=(200, 128))
                   / np.sqrt(128) * 4)
    recall = index.approximate_recall(queries, k=10)
    print(f"\nfaiss HNSW recall@10 vs exact (10,000 x 128, 200 queries): {recall:.3f}")
    assert recall >= 0.9
    assert os.path.exists(tmp_path / "idx" / "faiss-hnsw.index")
    np.testing.assert_array_equal(index.rows([3, 9_999, 0]), vectors[[3, 9_999, 0]])
    reloaded = EmbeddingIndex.load(str(tmp_path / "idx"))
    _, approx = reloaded.search(queries[:5], 10, backend="faiss")
    _, approx_before = index.search(queries[:5], 10, backend="faiss")
    np.testing.assert_array_equal(approx, approx_before)


# -- the CLI on a tiny random model ------------------------------------------------------

@pytest.fixture
def tiny_index(tiny):
    from align_tf.applications.embedder import Embedder

    embedder = Embedder(tiny["model"], tiny["processor"], source=tiny["model_dir"])
    return dict(tiny, embedder=embedder)


def run_cli(capsys, *argv):
    from align_tf import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_index_build_resumes_and_search_cli_matches_embeddings(tiny_index, capsys, monkeypatch,
                                                               tmp_path):
    from align_tf.applications import embedder as embedding

    folder = tmp_path / "idx"
    data = tiny_index["data"]
    # An interrupted build: 6 images in shards of 2, the embedder stops on the third shard.
    calls = {"n": 0}
    original = embedding.Embedder.embed_images

    def interrupted(self, images, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return original(self, images, **kwargs)

    # Every command gets the already loaded model (loading is tested in test_classify_cli);
    # record which model each one asked for.
    asked = []

    def loaded(model=None, batch_size=32):
        asked.append(model)
        tiny_index["embedder"].batch_size = batch_size
        return tiny_index["embedder"]

    monkeypatch.setattr(embedding, "load_embedder", loaded)
    argv = ["index", "build", data, "--output", folder, "--model", tiny_index["model_dir"],
            "--shard-size", 2, "--batch-size", 3, "--float16"]
    monkeypatch.setattr(embedding.Embedder, "embed_images", interrupted)
    code, _, err = run_cli(capsys, *argv)  # Ctrl-C: one line and the shell's status for SIGINT
    assert code == 130 and err.strip().endswith("align-tf index build: interrupted")
    assert json.loads((folder / "index.json").read_text())["count"] == 4
    seen = []

    def counting(self, images, **kwargs):
        seen.extend(images)
        return original(self, images, **kwargs)

    monkeypatch.setattr(embedding.Embedder, "embed_images", counting)
    has_faiss = importlib.util.find_spec("faiss") is not None
    code, out, err = run_cli(capsys, *argv, *(["--faiss"] if has_faiss else []))
    assert code == 0, err
    if has_faiss:
        assert "recall@6 against exact search on 6 indexed images" in out
    assert len(seen) == 2      # 6 images: 4 were done, only the last 2 are embedded now
    assert "6 images" in out and "float16" in out
    monkeypatch.setattr(embedding.Embedder, "embed_images", original)

    embedder = tiny_index["embedder"]
    paths = sorted(os.path.abspath(p) for ps in tiny_index["images"].values() for p in ps)
    vectors = embedder.embed_images(paths).astype(np.float16).astype(np.float32)
    index = EmbeddingIndex.load(str(folder))
    assert [m["path"] for m in index.metadata] == paths
    np.testing.assert_allclose(index.vectors(), vectors, atol=2e-3)

    code, out, err = run_cli(capsys, "search", "--index", folder, "--text", "a red circle",
                             "--top-k", 4, "--json")
    assert code == 0, err
    hits = json.loads(out)
    text = embedder.embed_texts(["a red circle"])[0]
    expected = np.argsort(-(index.vectors() @ text), kind="stable")[:4]
    assert [h["path"] for h in hits] == [paths[i] for i in expected]

    query_image = tiny_index["images"]["blue square"][1]
    code, out, err = run_cli(capsys, "search", "--index", folder, "--image", query_image,
                             "--plus-text", "red", "--minus-text", "blue", "--weight", 0.5,
                             "--top-k", 3)
    assert code == 0, err
    plus, minus = embedder.embed_texts(["red", "blue"])
    q = compose_query(embedder.embed_images([query_image])[0], [plus], [minus], 0.5)
    expected = np.argsort(-(index.vectors() @ q), kind="stable")[:3]
    lines = out.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "path"]
    assert [line.split()[2] for line in lines[2:]] == [paths[i] for i in expected]

    code, out, err = run_cli(capsys, "search", "--index", folder, "--text", "x",
                             "--plus-text", "y")
    assert code == 2 and "--image" in err
    # search embeds queries with the model that built the index (recorded in index.json).
    assert asked == [tiny_index["model_dir"]] * 4
    assert index.model == os.path.abspath(tiny_index["model_dir"])


# -- with the bundled demo model (needs meaning) -----------------------------------------

def demo_embedder():
    from align_tf.applications.embedder import load_embedder

    try:
        return load_embedder(None)
    except FileNotFoundError as e:
        pytest.skip(f"demo model not built yet: {e}")


@pytest.fixture(scope="module")
def demo_index():
    from align_tf.data.synthetic import COLOURS, SHAPES, draw_shape

    embedder = demo_embedder()
    size = embedder.processor.image_processor.size[0]
    rng = np.random.default_rng(2024)              # fresh images, not the training stream
    images, meta = [], []
    for colour in COLOURS:
        for shape in SHAPES:
            for _ in range(6):
                images.append(draw_shape(rng, colour, shape, max(size, 64)))
                meta.append({"class": f"{colour} {shape}", "colour": colour, "shape": shape})
    index = EmbeddingIndex.from_embeddings(embedder.embed_images(images), meta,
                                           embedder=embedder)
    return index, embedder, rng


def test_demo_text_queries_precision_at_5(demo_index):
    from align_tf.data.synthetic import COLOURS, SHAPES

    index, _, _ = demo_index
    precisions = {}
    for colour in COLOURS:
        for shape in SHAPES:
            hits = index.query(text=f"a {colour} {shape}", k=5)
            precisions[f"{colour} {shape}"] = np.mean([h["class"] == f"{colour} {shape}"
                                                       for h in hits])
    mean = float(np.mean(list(precisions.values())))
    print(f"\ndemo model, text->image precision@5 over 24 classes: {mean:.3f}")
    assert mean >= 0.8, precisions


def test_demo_blue_circle_plus_red_minus_blue_retrieves_red_circles(demo_index):
    from align_tf.data.synthetic import SHAPES, draw_shape

    index, embedder, rng = demo_index
    size = max(embedder.processor.image_processor.size[0], 64)
    # "red" and "blue" in every shape context, averaged: the shape words cancel between plus
    # and minus, leaving the colour. (Bare words are not shape-neutral for the demo model: its
    # captions always name a shape, and alone "red" lands on red triangles, "blue" on blue
    # stars, so the bare difference also pulls the shape; checked below.)
    in_context = [f"a {{}} {shape}" for shape in SHAPES]
    red_circles, bare_red = [], []
    for _ in range(3):
        blue_circle = draw_shape(rng, "blue", "circle", size)
        plain = index.query(image=blue_circle, k=5)
        assert [h["class"] for h in plain].count("blue circle") >= 4
        hits = index.query(image=blue_circle, plus_text="red", minus_text="blue", k=5,
                           text_templates=in_context)
        red_circles.append(np.mean([h["class"] == "red circle" for h in hits]))
        bare = index.query(image=blue_circle, plus_text="red", minus_text="blue", weight=2, k=5)
        bare_red.append(np.mean([h["colour"] == "red" for h in bare]))
    print(f"\ndemo model, blue circle + 'red' - 'blue' (in shape contexts): red circles in top 5 "
          f"= {np.mean(red_circles):.2f}; bare words, weight 2: red shapes = {np.mean(bare_red):.2f}")
    assert np.mean(red_circles) >= 0.8
    assert np.mean(bare_red) >= 0.8
