"""tf.data input pipelines for image-text pairs: TFRecord shards, a TSV/CSV + image folder, Karpathy JSON.

Each reader yields `(image_bytes, caption)` string pairs (a TSV / JSON reader yields the image
*path*, read inside the decode step so that a missing file is skipped like a corrupt one).
`batch_pairs` turns pairs into model batches: shuffle, decode + resize + crop (random crop and
flip when training, seeded), skip and count what does not decode, batch, tokenize, prefetch.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import tensorflow as tf

from align_tf.data.tfrecord import CAPTION_KEY, IMAGE_KEY, parse_example
from align_tf.errors import ArgumentTypeError, ConfigError, DataSpecError  # noqa: F401  (public here too)

log = logging.getLogger(__name__)

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfr", ".tfrecord.gz", ".tfrecords.gz")
IMAGE_COLUMN_NAMES = ("image", "image_path", "filepath", "file", "path", "filename", "url")
CAPTION_COLUMN_NAMES = ("caption", "text", "title", "sentence", "raw")


# ===================================================================== counting skipped records
class SkipCounter(tf.Module):
    """Counts records that reached the decoder and records that came out of it.

    `skipped` = seen - kept: exact once an epoch is fully read, approximate while records are in
    flight. The counters are plain CPU variables, created outside any distribution strategy.
    """

    def __init__(self, name: str | None = None):
        super().__init__(name=name or "skip_counter")
        with tf.init_scope(), tf.device("/cpu:0"):
            self._seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="seen")
            self._kept = tf.Variable(0, dtype=tf.int64, trainable=False, name="kept")

    def count_seen(self, *element):
        self._seen.assign_add(1)
        return element if len(element) > 1 else element[0]

    def count_kept(self, *element):
        self._kept.assign_add(1)
        return element if len(element) > 1 else element[0]

    @property
    def seen(self) -> int:
        return int(self._seen.numpy())

    @property
    def kept(self) -> int:
        return int(self._kept.numpy())

    @property
    def skipped(self) -> int:
        return max(self.seen - self.kept, 0)

    def reset(self) -> None:
        self._seen.assign(0)
        self._kept.assign(0)


try:  # keras is a dependency, but keep this module importable for pipeline-only use
    import keras

    _CallbackBase = keras.callbacks.Callback
except ImportError:  # pragma: no cover
    _CallbackBase = object


class SkippedRecordsCallback(_CallbackBase):
    """Warns at the end of each epoch how many records were skipped, and logs `skipped_records`."""

    def __init__(self, counter_or_dataset):
        super().__init__()
        counter = getattr(counter_or_dataset, "skip_counter", counter_or_dataset)
        if not isinstance(counter, SkipCounter):
            raise ArgumentTypeError("pass a SkipCounter or a dataset made by align_tf.data.pipelines")
        self.counter = counter
        self._reported = 0

    def on_epoch_end(self, epoch, logs=None):
        skipped = self.counter.skipped
        new = skipped - self._reported
        self._reported = skipped
        if logs is not None:
            logs["skipped_records"] = float(new)
        if new:
            log.warning("epoch %d: skipped %d record(s) whose image did not decode (%d in total, %d kept)",
                        epoch + 1, new, skipped, self.counter.kept)


# ===================================================================== readers -> (image, caption)
def tfrecord_pairs(
    patterns: str | Sequence[str],
    *,
    shuffle_files: bool = False,
    seed: int | None = None,
    cycle_length: int = 8,
    deterministic: bool = True,
    compression: str | None = "auto",
) -> tf.data.Dataset:
    """(image_bytes, caption) from TFRecord shards written by `align-tf data write-tfrecords`.

    Shards are read interleaved (`cycle_length` at a time, in parallel).
    """
    files = _expand(patterns)
    if not files:
        raise DataSpecError(f"no TFRecord files match {patterns!r}")
    if compression == "auto":
        compression = "GZIP" if all(f.endswith(".gz") for f in files) else None
    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    records = names.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression or ""),
        cycle_length=max(1, min(cycle_length, len(files))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    return records.map(_parse_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def _parse_pair(serialized):
    example = parse_example(serialized)
    return example[IMAGE_KEY], example[CAPTION_KEY]


def read_caption_table(
    path: str,
    image_root: str | None = None,
    *,
    delimiter: str | None = None,
    image_column: int | str | None = None,
    caption_column: int | str | None = None,
) -> list[tuple[str, str]]:
    """(image path, caption) rows of a TSV / CSV file; image paths resolved against `image_root`
    (default: the table's folder). A header row is recognised by its column names."""
    if not os.path.isfile(path):
        raise DataSpecError(f"{path}: no such file")
    if delimiter is None:
        delimiter = "," if path.lower().endswith(".csv") else "\t"
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8", newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL) if row]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    has_header = any(c in IMAGE_COLUMN_NAMES for c in header) and any(c in CAPTION_COLUMN_NAMES for c in header)
    image_index = _column(image_column, header if has_header else None, IMAGE_COLUMN_NAMES, 0, path)
    caption_index = _column(caption_column, header if has_header else None, CAPTION_COLUMN_NAMES, 1, path)
    pairs = []
    for line, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        if len(row) <= max(image_index, caption_index):
            raise DataSpecError(f"{path}:{line}: expected at least {max(image_index, caption_index) + 1} "
                                f"columns separated by {delimiter!r}, got {len(row)}")
        image = row[image_index].strip()
        pairs.append((image if os.path.isabs(image) or "://" in image else os.path.join(root, image),
                      row[caption_index]))
    return pairs


def _column(chosen, header, names, default, path) -> int:
    if chosen is None:
        if header:
            for i, name in enumerate(header):
                if name in names:
                    return i
        return default
    if isinstance(chosen, int):
        return chosen
    if not header or chosen.lower() not in header:
        raise DataSpecError(f"{path}: no column named {chosen!r} (header: {header})")
    return header.index(chosen.lower())


def table_pairs(path: str, image_root: str | None = None, **kwargs) -> tf.data.Dataset:
    """(image_path, caption) from a TSV / CSV; images are read in the decode step."""
    pairs = read_caption_table(path, image_root, **kwargs)
    if not pairs:
        raise DataSpecError(f"{path}: no rows")
    return tf.data.Dataset.from_tensor_slices(([p for p, _ in pairs], [c for _, c in pairs]))


@dataclass
class KarpathyImage:
    path: str
    captions: list[str]
    split: str
    image_id: int | str | None = None
    extra: dict = field(default_factory=dict)


def read_karpathy(json_path: str, image_root: str, splits: str | Iterable[str] = ("train", "restval")) -> list[KarpathyImage]:
    """Images and their captions from Karpathy's `dataset_coco.json` / `dataset_flickr30k.json`.

    Paths are `image_root/filepath/filename` (COCO: filepath is `train2014` / `val2014`) or
    `image_root/filename` (Flickr30K has no filepath).
    """
    if not os.path.isfile(json_path):
        raise DataSpecError(f"{json_path}: no such file")
    with open(json_path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataSpecError(f"{json_path}: not a Karpathy split file (expected {{'images': [...]}})")
    wanted = {splits} if isinstance(splits, str) else set(splits)
    out = []
    for i, entry in enumerate(data["images"]):
        split = entry.get("split")
        if wanted and split not in wanted:
            continue
        try:
            filename = entry["filename"]
            captions = [s["raw"] for s in entry["sentences"]]
        except (KeyError, TypeError):
            raise DataSpecError(f"{json_path}: image {i} lacks 'filename' or 'sentences[].raw'") from None
        path = os.path.join(image_root, entry.get("filepath", ""), filename)
        image_id = entry.get("cocoid", entry.get("imgid"))
        out.append(KarpathyImage(path, captions, split, image_id))
    return out


def karpathy_pairs(json_path: str, image_root: str, splits=("train", "restval")) -> tf.data.Dataset:
    """(image_path, caption): one pair per caption (five per image in COCO and Flickr30K)."""
    images = read_karpathy(json_path, image_root, splits)
    paths = [im.path for im in images for _ in im.captions]
    captions = [c for im in images for c in im.captions]
    if not paths:
        raise DataSpecError(f"{json_path}: no captions in splits {splits}")
    return tf.data.Dataset.from_tensor_slices((paths, captions))


def pairs_from_spec(spec: str, image_root: str | None = None, *, seed: int | None = None,
                    shuffle_files: bool = True, deterministic: bool = True, splits=("train", "restval")):
    """Readers by file type: TFRecord shards (a file, a glob, or a folder of shards), a .tsv / .csv
    table, or a Karpathy .json. Returns (dataset, holds_paths)."""
    path = os.path.expanduser(spec)
    lower = path.lower()
    if lower.endswith(".json"):
        if image_root is None:
            raise DataSpecError(f"{spec}: a Karpathy JSON needs image_root (the folder of the images)")
        return karpathy_pairs(path, image_root, splits), True
    if lower.endswith((".tsv", ".csv", ".txt")):
        return table_pairs(path, image_root), True
    if os.path.isdir(path):
        shards = sorted(f for f in glob.glob(os.path.join(path, "*")) if f.lower().endswith(TFRECORD_SUFFIXES))
        if not shards:
            raise DataSpecError(f"{spec}: a folder without TFRecord shards (*.tfrecord)")
        return tfrecord_pairs(shards, shuffle_files=shuffle_files, seed=seed, deterministic=deterministic), False
    if glob.has_magic(path) or lower.endswith(TFRECORD_SUFFIXES) or os.path.isfile(path):
        return tfrecord_pairs(path, shuffle_files=shuffle_files, seed=seed, deterministic=deterministic), False
    raise DataSpecError(f"{spec}: not a TFRecord file / glob / folder, a .tsv / .csv, or a Karpathy .json")


def _expand(patterns) -> list[str]:
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [os.fspath(patterns)]
    files = []
    for pattern in patterns:
        matched = sorted(glob.glob(os.path.expanduser(pattern))) if glob.has_magic(pattern) else [pattern]
        files.extend(f for f in matched if os.path.isfile(f))
    return files


# ===================================================================== pairs -> model batches
def batch_pairs(
    pairs: tf.data.Dataset,
    processor,
    batch_size: int,
    *,
    training: bool = True,
    holds_paths: bool = False,
    shuffle_buffer: int = 1024,
    seed: int | None = None,
    deterministic: bool | None = None,
    drop_remainder: bool = True,
    skip_counter: SkipCounter | None = None,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    prefetch: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Model batches `{pixel_values, input_ids, attention_mask, token_type_ids}` from pairs.

    `training`: shuffle, random crop 289 of the 346 resize and random flip; otherwise the
    reference center crop. With `seed` the order and the augmentation are reproducible (and
    differ between epochs); `deterministic` keeps the parallel decode in order (default: only
    when not training, so evaluation sees records in file order). Records whose image cannot be read or decoded are skipped and counted: the returned
    dataset has a `skip_counter` attribute (see `SkippedRecordsCallback`).
    """
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    image_processor, tokenizer = processor.image_processor, processor.tokenizer
    counter = skip_counter or SkipCounter()
    if deterministic is None:
        deterministic = not training
    options = tf.data.Options()
    options.deterministic = deterministic
    if training and shuffle_buffer > 1:
        pairs = pairs.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    pairs = pairs.map(counter.count_seen)
    if training:
        # One random int64 per record, redrawn every epoch (seeded): the augmentation seed.
        randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        pairs = tf.data.Dataset.zip((pairs, randoms)).map(lambda pair, r: (pair[0], pair[1], r))
        base = tf.constant(0 if seed is None else seed, tf.int64)

        def load(image, caption, random):
            pixels = image_processor.preprocess_image(
                image_processor.decode_image(_read_if_path(image, holds_paths)),
                training=True,
                seed=tf.stack([base, random]),
            )
            return pixels, caption
    else:

        def load(image, caption):
            pixels = image_processor.preprocess_image(image_processor.decode_image(_read_if_path(image, holds_paths)))
            return pixels, caption

    examples = pairs.map(load, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    examples = examples.ignore_errors().map(counter.count_kept)
    batches = examples.batch(batch_size, drop_remainder=drop_remainder)

    def assemble(pixels, captions):
        features = dict(tokenizer(captions))
        features["pixel_values"] = pixels
        return features

    batches = batches.map(assemble, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    batches = batches.prefetch(prefetch).with_options(options)
    batches.skip_counter = counter
    return batches


def _read_if_path(image, holds_paths: bool):
    return tf.io.read_file(image) if holds_paths else image


def training_dataset(
    spec: str,
    processor,
    batch_size: int,
    seed: int = 0,
    deterministic: bool = False,
    *,
    training: bool = True,
    image_root: str | None = None,
    shuffle_buffer: int = 1024,
    splits=("train", "restval"),
    skip_counter: SkipCounter | None = None,
) -> tf.data.Dataset:
    """One epoch of model batches from a spec (see `pairs_from_spec`); `.repeat()` it for more."""
    pairs, holds_paths = pairs_from_spec(
        spec, image_root, seed=seed, shuffle_files=training, deterministic=deterministic, splits=splits
    )
    return batch_pairs(
        pairs,
        processor,
        batch_size,
        training=training,
        holds_paths=holds_paths,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        deterministic=deterministic,
        skip_counter=skip_counter,
    )
