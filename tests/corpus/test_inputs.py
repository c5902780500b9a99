"""The other inputs of `align-tf embed`: a caption table (text embeddings too), TFRecord shards
from `align-tf data write-tfrecords`, Parquet with an image-bytes column read through a pyarrow
filesystem URI, and inputs that are wrong."""

import json
import os

import numpy as np
import pytest

from align_tf.errors import AlignTFError, DataSpecError

CAPTIONS = ["a photo of a cat", "two dogs playing in the snow", "a red square",
            "", "a long caption " * 30]


def test_caption_table_embeds_texts_like_the_model(corpus, tiny, tmp_path, embeddings_of):
    from align_tf.applications.embedder import l2_normalize
    from align_tf.cli import main

    table = tmp_path / "pairs.tsv"
    rows = [(os.path.join(corpus["folder"], key), caption)
            for key, caption in zip(corpus["ids"][:4], CAPTIONS)]
    rows.append((rows[0][0], CAPTIONS[4]))  # one image, a second caption: id gets "#2"
    rows.append(("broken/not_an_image.jpg", "never embedded"))
    table.write_text("image\tcaption\n" + "".join(f"{i}\t{c}\n" for i, c in rows))
    output = str(tmp_path / "out")
    assert main(["embed", "--texts", str(table), "--output", output,
                 "--model", corpus["saved_model"], "--batch-size", "2"]) == 0
    texts = embeddings_of(output, "text_embedding")
    images = embeddings_of(output)
    order = [r[0] for r in rows[:4]] + [rows[0][0] + "#2"]  # absolute paths stay the ids
    assert sorted(texts) == sorted(images) == sorted(order)
    inputs = tiny["processor"](text=CAPTIONS)
    expected = l2_normalize(tiny["model"].get_text_features(
        inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]))
    np.testing.assert_allclose(np.stack([texts[k] for k in order]), expected, atol=1e-5)
    np.testing.assert_allclose(images[order[4]], images[order[0]], atol=1e-6)
    with open(os.path.join(output, "errors.jsonl")) as f:
        errors = [json.loads(line) for line in f]
    assert [e["id"] for e in errors] == ["broken/not_an_image.jpg"]
    assert "cannot read" in errors[0]["reason"]  # a path the table names but nothing is there


def test_tfrecord_shards_and_parquet_by_uri_give_the_same_embeddings(corpus, tmp_path,
                                                                     embeddings_of):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from align_tf.corpus import embed_corpus
    from align_tf.data.tfrecord import write_tfrecords

    keys = corpus["ids"][:10]
    paths = [os.path.join(corpus["folder"], k) for k in keys]
    summary = write_tfrecords([(p, f"caption {n}") for n, p in enumerate(paths)],
                              str(tmp_path / "records" / "train"), num_shards=2, progress=False)
    assert summary.written == 10
    images = [open(p, "rb").read() for p in paths] + [b"\x89PNG\r\n\x1a\n broken"]
    pq.write_table(pa.table({"key": keys + ["bad"], "jpg": images,
                             "caption": [f"caption {n}" for n in range(11)]}),
                   str(tmp_path / "table.parquet"))
    reference = embeddings_of(corpus["output"])

    uri = "file://" + str(tmp_path / "table.parquet")
    output = str(tmp_path / "out")
    manifest = embed_corpus([str(tmp_path / "records"), uri], output, model=corpus["saved_model"],
                            batch_size=4, progress=False)
    assert manifest["counts"] == {"inputs": 21, "embedded": 20, "errors": 1, "shards": 3,
                                  "shards_this_run": 3}
    found = embeddings_of(output)
    records = {k: v for k, v in found.items() if ".tfrecord#" in k}
    assert sorted(records) == sorted(f"train-0000{s}-of-00002.tfrecord#{n}"
                                     for s in (0, 1) for n in range(5))
    assert sorted(embeddings_of(output, "text_embedding")) == sorted(found)
    for n, key in enumerate(keys):
        np.testing.assert_allclose(records[f"train-0000{n // 5}-of-00002.tfrecord#{n % 5}"],
                                   reference[key], atol=1e-6)
        np.testing.assert_allclose(found[key], reference[key], atol=1e-6)  # Parquet: `key` column
    with open(os.path.join(output, "errors.jsonl")) as f:
        assert json.loads(f.readline())["id"] == "bad"


def test_folder_by_uri_and_glob_plan_the_same_ids(corpus):
    from align_tf.corpus import plan_partitions

    def ids(partitions):
        return [item[0] for p in partitions for item in p["items"]]

    by_path = ids(plan_partitions([corpus["folder"]], shard_size=7))
    by_uri = ids(plan_partitions(["file://" + corpus["folder"]], shard_size=7))
    assert by_path == by_uri == sorted(corpus["ids"] + ["broken/not_an_image.jpg",
                                                        "photos/truncated.png"])
    by_glob = ids(plan_partitions([os.path.join(corpus["folder"], "photos", "**", "*.jpg")]))
    assert by_glob == sorted(k[len("photos/"):] for k in corpus["ids"]
                             if k.startswith("photos/") and k.endswith(".jpg"))


def test_bad_inputs_are_named(corpus, tmp_path):
    from align_tf.corpus import plan_partitions

    with pytest.raises(AlignTFError, match="nothing_here"):
        plan_partitions([str(tmp_path / "nothing_here")])
    with pytest.raises(DataSpecError, match="comes from two inputs"):
        plan_partitions([os.path.join(corpus["folder"], "photos"),
                         os.path.join(corpus["folder"], "photos")])
    (tmp_path / "noimages.parquet").write_bytes(b"")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from align_tf.corpus import read_partition

    pq.write_table(pa.table({"n": [1, 2]}), str(tmp_path / "noimages.parquet"))
    partition = plan_partitions([str(tmp_path / "noimages.parquet")])[0]
    with pytest.raises(DataSpecError, match="no image column"):
        read_partition(partition)


def test_an_oversized_image_file_is_an_error_entry_not_a_read(tmp_path):
    """A (sparse) image file past the 256 MiB bound is refused from its size on disk, recorded
    with its reason, and never read into memory; its neighbours are read as usual."""
    from align_tf.corpus.sources import read_image_bytes, read_partition
    from align_tf.errors import ImageSizeError
    from align_tf.protocol import MAX_IMAGE_FILE_BYTES

    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(MAX_IMAGE_FILE_BYTES + 1)
    small = tmp_path / "small.jpg"
    small.write_bytes(b"\xff\xd8\xff" + b"\0" * 20)
    items, errors = read_partition({"kind": "images", "items": [["small.jpg", str(small)],
                                                                ["huge.jpg", str(huge)]]})
    assert [i[0] for i in items] == ["small.jpg"]
    assert errors[0]["id"] == "huge.jpg" and "more than the" in errors[0]["reason"]
    with pytest.raises(ImageSizeError, match="more than the 10 bytes"):
        read_image_bytes(small.as_uri(), max_bytes=10)
