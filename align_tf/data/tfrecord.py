"""TFRecord shards of image-text pairs: the record layout, and a writer from a TSV + image folder."""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import tensorflow as tf

from align_tf.errors import ConfigError, ImageSizeError
from align_tf.progress import progress_bar
from align_tf.protocol import read_image_file

# One tf.train.Example per pair.
IMAGE_KEY = "image/encoded"  # the file's bytes, as they were (JPEG / PNG / GIF / BMP)
CAPTION_KEY = "caption"  # UTF-8
SOURCE_KEY = "image/source"  # where the bytes came from (a path relative to the table), for debugging
FEATURES = {
    IMAGE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    CAPTION_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    SOURCE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """{IMAGE_KEY, CAPTION_KEY, SOURCE_KEY} string scalars from one serialized example."""
    return tf.io.parse_single_example(serialized, FEATURES)


def make_example(image_bytes: bytes, caption: str, source: str = "") -> bytes:
    def feature(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                IMAGE_KEY: feature(image_bytes),
                CAPTION_KEY: feature(caption.encode("utf-8")),
                SOURCE_KEY: feature(source.encode("utf-8")),
            }
        )
    ).SerializeToString()


@dataclass
class WriteSummary:
    shards: list[str] = field(default_factory=list)
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image path, reason)

    def describe(self, limit: int = 10) -> str:
        lines = [f"wrote {self.written} pair(s) to {len(self.shards)} shard(s); skipped {len(self.skipped)}"]
        for path, reason in self.skipped[:limit]:
            lines.append(f"  skipped {path}: {reason}")
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        return "\n".join(lines)


def shard_paths(output_prefix: str, num_shards: int, compression: str | None = None) -> list[str]:
    suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
    return [f"{output_prefix}-{i:05d}-of-{num_shards:05d}{suffix}" for i in range(num_shards)]


def write_tfrecords(
    pairs: Sequence[tuple[str, str]],
    output_prefix: str,
    *,
    num_shards: int | None = None,
    examples_per_shard: int = 1000,
    shuffle_seed: int | None = None,
    check: Callable[[bytes], str | None] | None = None,
    compression: str | None = None,
    progress: bool = True,
) -> WriteSummary:
    """Write (image path, caption) pairs as sharded TFRecords, skipping unreadable images.

    `check(image_bytes)` returns why an image is unusable (or None); by default the image
    processor's header check (format, size, decompression-bomb guard). Shards are filled in
    contiguous runs of the (optionally shuffled) pairs.
    """
    pairs = list(pairs)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(pairs)
    if num_shards is None:
        num_shards = max(1, math.ceil(len(pairs) / max(1, examples_per_shard)))
    if num_shards <= 0:
        raise ConfigError(f"num_shards must be positive, got {num_shards}")
    if check is None:
        from align_tf.preprocessing.image import AlignImageProcessor

        check = AlignImageProcessor().describe_problem
    folder = os.path.dirname(os.path.abspath(output_prefix))
    os.makedirs(folder, exist_ok=True)
    summary = WriteSummary(shards=shard_paths(output_prefix, num_shards, compression))
    per_shard = math.ceil(len(pairs) / num_shards) if pairs else 0
    options = tf.io.TFRecordOptions(compression_type=compression or "")
    bar = progress_bar(len(pairs), "writing TFRecords", bool(progress), unit="image")
    writers = [tf.io.TFRecordWriter(path, options) for path in summary.shards]
    try:
        for i, (path, caption) in enumerate(pairs):
            bar.update(1)
            try:
                data = read_image_file(path)
            except ImageSizeError as e:  # a file too large to read into memory
                summary.skipped.append((path, str(e).split("): ", 1)[-1]))
                continue
            except OSError as e:
                summary.skipped.append((path, e.strerror or str(e)))
                continue
            problem = check(data)
            if problem:
                summary.skipped.append((path, problem))
                continue
            writers[min(i // max(per_shard, 1), num_shards - 1)].write(make_example(data, caption, path))
            summary.written += 1
    finally:
        for writer in writers:
            writer.close()
        bar.close()
    return summary



def iterate_records(paths: Iterable[str], compression: str | None = None):
    """(image_bytes, caption, source) from shards, in order (for inspection and tests)."""
    for path in paths:
        for record in tf.data.TFRecordDataset(path, compression_type=compression or ""):
            example = parse_example(record)
            yield example[IMAGE_KEY].numpy(), example[CAPTION_KEY].numpy().decode("utf-8"), example[SOURCE_KEY].numpy().decode("utf-8")
