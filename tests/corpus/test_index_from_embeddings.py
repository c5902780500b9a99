"""`align-tf index build --from-embeddings` turns `align-tf embed` shards into the search index
without running the model: `align-tf search` on it gives the top-10 of the index built from the
same images; the IVF-PQ option reports its recall@10 against exact search."""

import json
import os
import re

import numpy as np


def search_json(main, capsys, index, *query):
    capsys.readouterr()
    assert main(["search", "--index", index, "--top-k", "10", "--json", *query]) == 0
    return json.loads(capsys.readouterr().out)


def test_same_top10_as_index_built_from_images(corpus, tmp_path, capsys):
    from align_tf.applications.search import EmbeddingIndex
    from align_tf.cli import main

    from_images, from_shards = str(tmp_path / "from_images"), str(tmp_path / "from_shards")
    good = [os.path.join(corpus["folder"], key) for key in corpus["ids"]]
    assert main(["index", "build", *good, "--output", from_images,
                 "--model", corpus["checkpoint"], "--shard-size", "16"]) == 0
    assert main(["index", "build", "--from-embeddings", corpus["output"],
                 "--output", from_shards]) == 0
    shards = EmbeddingIndex.load(from_shards)
    assert len(shards) == 60 and len(shards.shards) == 8  # one index shard per Parquet shard
    assert shards.model == os.path.abspath(corpus["checkpoint"])
    for query in (["--text", "a red circle"], ["--image", good[7]]):
        expected = search_json(main, capsys, from_images, *query)
        got = search_json(main, capsys, from_shards, *query)
        assert [h["path"] for h in got] == [h["path"] for h in expected]
        np.testing.assert_allclose([h["score"] for h in got], [h["score"] for h in expected],
                                   atol=1e-5)
    assert got[0]["path"] == good[7] and got[0]["key"] == corpus["ids"][7]
    assert got[0]["id"] == expected[0]["id"]  # the row number, as in any index


def test_ivfpq_build_reports_recall_and_serves_search(corpus, tmp_path, capsys):
    from align_tf.applications.search import EmbeddingIndex
    from align_tf.cli import main

    output = str(tmp_path / "ivfpq")
    capsys.readouterr()
    assert main(["index", "build", "--from-embeddings", corpus["output"], "--output", output,
                 "--ivfpq", "--float16"]) == 0
    printed = capsys.readouterr().out
    found = re.search(r"IVF-PQ index built .*recall@10 against exact search on 60 indexed "
                      r"images as queries: ([0-9.]+)", printed)
    assert found, printed
    index = EmbeddingIndex.load(output)
    assert index.dtype == "float16"
    queries = index.rows(np.arange(60))
    recall = index.approximate_recall(queries, k=10, backend="ivfpq")
    assert abs(recall - float(found.group(1))) < 1e-3  # the reported number is this one
    assert 0.3 < recall <= 1.0
    hits = search_json(main, capsys, output, "--text", "a red circle", "--backend", "ivfpq")
    assert len(hits) == 10 and len({h["id"] for h in hits}) == 10


def test_unfinished_embed_folder_is_refused(corpus, tmp_path):
    import shutil

    import pytest

    from align_tf.errors import CorpusOutputError
    from align_tf.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(corpus["output"], copy, ignore=shutil.ignore_patterns("model"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["status"] = "running"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorpusOutputError, match="did not finish"):
        from align_tf.corpus.shards import shard_paths

        shard_paths(str(copy))
    assert main(["index", "build", "--from-embeddings", str(copy),
                 "--output", str(tmp_path / "idx")]) == 2
