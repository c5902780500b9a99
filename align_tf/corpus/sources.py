"""What a corpus is made of: inputs (image files, folders, globs, caption tables, TFRecord shards,
Parquet files; local paths or any pyarrow filesystem URI) planned into partitions, and reading
one partition's raw items (id, encoded image bytes, caption).

A partition is a small JSON-able dict and the unit of work: one partition gives one output
shard, named from the partition, so a rerun finds which partitions are done. Planning lists
files only (it never opens an image); reading happens on the workers.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import os
import struct

from align_tf.applications.image_files import find_images, is_image_file
from align_tf.errors import ConfigError, DataSpecError, ImageSizeError
from align_tf.protocol import MAX_IMAGE_FILE_BYTES, read_image_file

TABLE_SUFFIXES = (".tsv", ".csv")
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfr", ".tfrecord.gz", ".tfrecords.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Column names looked for in Parquet inputs when none is given, in this order.
PARQUET_IMAGE_COLUMNS = ("image", "image_bytes", "jpg", "png", "bytes", "image/encoded")
PARQUET_ID_COLUMNS = ("id", "key", "image_path", "path", "url")
PARQUET_CAPTION_COLUMNS = ("caption", "text", "title")
# The tf.train.Example features written by `align-tf data write-tfrecords` (align_tf.data.tfrecord).
TFRECORD_IMAGE, TFRECORD_CAPTION = b"image/encoded", b"caption"


# -- filesystems --------------------------------------------------------------------------------
def is_uri(path: str) -> bool:
    return "://" in str(path)


def filesystem(path: str):
    """(pyarrow filesystem, path inside it) for a local path or a URI (file://, s3://, gs://, ...)."""
    import pyarrow.fs

    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


def read_bytes(location: str) -> bytes:
    """The whole file at a local path or URI."""
    if not is_uri(location):
        with open(location, "rb") as f:
            return f.read()
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def read_image_bytes(location: str, max_bytes: int = MAX_IMAGE_FILE_BYTES) -> bytes:
    """One image file at a local path or URI, refused (ImageSizeError) past `max_bytes` before
    it is read into memory: the same bound as every other place align-tf reads image files."""
    if not is_uri(location):
        return read_image_file(location, max_bytes)
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageSizeError(f"image ({location}): more than the {max_bytes:,} bytes read into "
                             "memory for an image")
    return data


def _join(base: str, relative: str) -> str:
    return base.rstrip("/") + "/" + relative if is_uri(base) else os.path.join(base, relative)


def _list_uri(uri: str) -> list[str]:
    """Files under a URI (a file, a folder listed recursively, or a glob), as URIs, sorted."""
    import pyarrow.fs

    scheme = uri.split("://", 1)[0] + "://"
    fs, path = filesystem(uri)
    if any(c in path for c in "*?["):
        prefix = path[:min(path.index(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]
        infos = fs.get_file_info(pyarrow.fs.FileSelector(prefix, recursive=True))
        found = [i.path for i in infos if i.type == pyarrow.fs.FileType.File
                 and fnmatch.fnmatch(i.path, path)]
    else:
        info = fs.get_file_info(path)
        if info.type == pyarrow.fs.FileType.File:
            found = [path]
        elif info.type == pyarrow.fs.FileType.Directory:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
            found = [i.path for i in infos if i.type == pyarrow.fs.FileType.File]
        else:
            raise DataSpecError(f"{uri}: no such file or folder")
    return sorted(scheme + p if not p.startswith(scheme) else p for p in found)


# -- planning -----------------------------------------------------------------------------------
def kind_of(path: str) -> str:
    lower = str(path).lower()
    if lower.endswith(TABLE_SUFFIXES):
        return "table"
    if lower.endswith(TFRECORD_SUFFIXES):
        return "tfrecord"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "images"


def _kind_of_source(source: str) -> str:
    """A file or pattern by its suffix; a folder by what it holds: images if any, else TFRecord
    shards, else Parquet files."""
    kind = kind_of(source)
    if kind != "images" or any(c in source for c in "*?["):
        return kind
    if is_uri(source) or os.path.isdir(source):
        kinds = {kind_of(f) for f in _files_of(source) if kind_of(f) != "images" or is_image_file(f)}
        for kind in ("images", "tfrecord", "parquet"):
            if kind in kinds:
                return kind
    return "images"


def _root_of(source: str) -> str:
    """The folder ids are relative to: the folder itself, a glob's fixed prefix, a file's folder."""
    if not is_uri(source) and os.path.isdir(source):
        return os.path.abspath(source)
    if any(c in source for c in "*?["):
        source = source[:min(source.index(c) for c in "*?[" if c in source)]
        return source.rstrip("/") if is_uri(source) else os.path.abspath(source.rsplit("/", 1)[0] or ".")
    if is_uri(source):
        return source if not is_image_file(source) else source.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(source))


def _relative(location: str, root: str) -> str:
    if is_uri(location):
        return location[len(root):].lstrip("/") if location.startswith(root) else location
    return os.path.relpath(location, root).replace(os.sep, "/")


def _files_of(source: str) -> list[str]:
    """Every file a source names (not only images: tables, shards), sorted, for typed inputs."""
    if is_uri(source):
        return _list_uri(source)
    if os.path.isdir(source):
        found = []
        for top, dirs, files in os.walk(source):
            dirs.sort()
            found.extend(os.path.join(top, f) for f in sorted(files))
        return found
    if os.path.isfile(source):
        return [os.path.abspath(source)]
    import glob

    found = sorted(os.path.abspath(p) for p in glob.glob(source, recursive=True) if os.path.isfile(p))
    if not found:
        raise DataSpecError(f"{source}: no such file, folder or matching pattern")
    return found


def _image_files(source: str) -> list[str]:
    if is_uri(source):
        found = [p for p in _list_uri(source) if is_image_file(p)]
        if not found:
            raise DataSpecError(f"{source}: no image files there")
        return found
    if not os.path.exists(source) and not any(c in source for c in "*?["):
        raise DataSpecError(f"{source}: no such file or folder")
    # Sorted by path, as a URI listing is: the same folder gives the same partitions either way.
    return sorted(os.path.abspath(p) for p in find_images([source]))


def plan_partitions(sources, *, texts=None, shard_size: int = 1000, image_root: str | None = None,
                    image_column: str | None = None, caption_column: str | None = None,
                    id_column: str | None = None) -> list[dict]:
    """Partitions for every input, in input order. Image files and caption-table rows are cut
    into runs of `shard_size`; each TFRecord or Parquet file is one partition. Names are
    `<input number>-<input name>-<run number>` and every id appears in exactly one partition
    (two inputs giving the same id are refused)."""
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    sources = [str(s) for s in ([sources] if isinstance(sources, str) else list(sources or ()))]
    sources += [str(t) for t in ([texts] if isinstance(texts, str) else list(texts or ()))]
    if not sources:
        raise DataSpecError("no inputs: give image files, folders, globs, a caption table, "
                            "TFRecord shards or Parquet files")
    partitions: list[dict] = []
    for number, source in enumerate(sources):
        kind = _kind_of_source(source)
        if kind == "images":
            root = _root_of(source)
            items = [[_relative(p, root), p] for p in _image_files(source)]
            partitions += _runs(number, source, "images", root, items, shard_size)
        elif kind == "table":
            root = image_root or _root_of(source)
            items = _table_items(source, root, image_column, caption_column)
            partitions += _runs(number, source, "table", root, items, shard_size)
        else:
            files = [f for f in _files_of(source) if kind_of(f) == kind]
            if not files:
                raise DataSpecError(f"{source}: no {kind} files there")
            for path in files:
                partition = {"kind": kind, "input": source, "file": path}
                if kind == "parquet":
                    partition.update(image_column=image_column, caption_column=caption_column,
                                     id_column=id_column)
                partitions.append(_named(partition, number, path))
    _check_unique(partitions)
    return partitions


def _runs(number, source, kind, root, items, shard_size) -> list[dict]:
    if not items:
        raise DataSpecError(f"{source}: no rows")
    runs = []
    for start in range(0, len(items), shard_size):
        partition = {"kind": kind, "input": source, "root": root,
                     "items": items[start:start + shard_size]}
        runs.append(_named(partition, number, source, start // shard_size))
    return runs


def _named(partition: dict, number: int, source: str, run: int | None = None) -> dict:
    stem = os.path.basename(str(source).rstrip("/")) or "input"
    for suffix in TABLE_SUFFIXES + TFRECORD_SUFFIXES + PARQUET_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[:-len(suffix)]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60].strip(".") or "input"
    name = f"{number:03d}-{stem}" + (f"-{run:05d}" if run is not None else "")
    partition["name"] = name
    return partition


def partition_fingerprint(partition: dict) -> str:
    """A hash of what the partition holds (its item list, or its file and options): a finished
    shard counts as done only while its partition is unchanged."""
    return hashlib.sha256(json.dumps(partition, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _check_unique(partitions) -> None:
    seen: dict[str, str] = {}
    for partition in partitions:
        for item in partition.get("items", ()):
            if item[0] in seen:
                raise DataSpecError(
                    f"id {item[0]!r} comes from two inputs ({seen[item[0]]} and "
                    f"{partition['input']}): ids are paths relative to each input's folder, "
                    "so give inputs whose relative paths differ")
            seen[item[0]] = partition["input"]
    names = [p["name"] for p in partitions]
    if len(set(names)) != len(names):  # cannot happen: names carry the input number
        raise DataSpecError("two partitions with one name")


def _table_items(path, root, image_column, caption_column) -> list[list[str]]:
    """[id, image location, caption] per row; the id is the image path as the table gives it
    (relative to `root`, or absolute), with `#2`, `#3` appended when one image has several
    captions."""
    from align_tf.data.pipelines import read_caption_table

    if is_uri(path):
        raise DataSpecError(f"{path}: caption tables are read from local paths; copy the table "
                            "locally (the images it names may be URIs)")
    rows = read_caption_table(path, root, image_column=_column(image_column),
                              caption_column=_column(caption_column))
    keys = [_relative(location, root) if location.startswith(root.rstrip("/") + "/") else location
            for location, _ in rows]
    return [[key, location, caption]
            for key, (location, caption) in zip(_numbered_repeats(keys), rows)]


def _numbered_repeats(keys) -> list[str]:
    """Ids made unique in order: the second `a` becomes `a#2`, the third `a#3`."""
    counts: dict[str, int] = {}
    out = []
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
        out.append(key if counts[key] == 1 else f"{key}#{counts[key]}")
    return out


def _column(value):
    return int(value) if value is not None and str(value).isdigit() else value


# -- reading one partition ----------------------------------------------------------------------
def read_partition(partition: dict):
    """(items, errors) for one partition: items are (id, image bytes, caption or None) in input
    order; errors are {"id", "reason"} for inputs that could not be read at all."""
    kind = partition["kind"]
    if kind in ("images", "table"):
        items, errors = [], []
        for entry in partition["items"]:
            key, location = entry[0], entry[1]
            caption = entry[2] if len(entry) > 2 else None
            try:
                items.append((key, read_image_bytes(location), caption))
            except ImageSizeError as e:
                errors.append({"id": key, "reason": str(e)})
            except OSError as e:
                errors.append({"id": key, "reason": f"cannot read {location}: "
                                                    f"{e.strerror or e}"})
        return items, errors
    if kind == "tfrecord":
        return _read_tfrecord(partition["file"])
    if kind == "parquet":
        return _read_parquet(partition), []
    raise DataSpecError(f"unknown partition kind {kind!r}")


def _read_tfrecord(location: str):
    """Records of `align-tf data write-tfrecords` shards, without importing TensorFlow: the
    TFRecord framing (length, crc, data, crc) and the three bytes features of the Example."""
    data = read_bytes(location)
    if location.lower().endswith(".gz"):
        data = gzip.decompress(data)
    stem = location.rstrip("/").rsplit("/", 1)[-1]
    items, errors, offset, number = [], [], 0, 0
    while offset < len(data):
        key = f"{stem}#{number}"
        if offset + 12 > len(data):
            errors.append({"id": key, "reason": "truncated TFRecord (record header cut off)"})
            break
        (length,) = struct.unpack_from("<Q", data, offset)
        start = offset + 12
        if start + length + 4 > len(data):
            errors.append({"id": key, "reason": "truncated TFRecord (record data cut off)"})
            break
        try:
            features = _example_bytes_features(data[start:start + length])
        except (ValueError, IndexError, struct.error) as e:
            errors.append({"id": key, "reason": f"not a tf.train.Example: {e}"})
        else:
            caption = features.get(TFRECORD_CAPTION)
            items.append((key, features.get(TFRECORD_IMAGE, b""),
                          caption.decode("utf-8") if caption is not None else None))
        offset, number = start + length + 4, number + 1
    return items, errors


def _varint(buffer: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(buffer: bytes):
    """(field number, bytes) of the length-delimited fields of a protobuf message."""
    at = 0
    while at < len(buffer):
        tag, at = _varint(buffer, at)
        wire = tag & 7
        if wire == 2:
            length, at = _varint(buffer, at)
            yield tag >> 3, buffer[at:at + length]
            at += length
        elif wire == 0:
            _, at = _varint(buffer, at)
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ConfigError(f"unsupported protobuf wire type {wire}")


def _example_bytes_features(example: bytes) -> dict[bytes, bytes]:
    """{feature name: first bytes value} of a serialized tf.train.Example
    (Example.features = 1 -> Features.feature = 1 (map entry: key 1, value 2) -> Feature.bytes_list
    = 1 -> BytesList.value = 1)."""
    out = {}
    for number, features in _fields(example):
        if number != 1:
            continue
        for entry_number, entry in _fields(features):
            if entry_number != 1:
                continue
            parts = dict(_fields(entry))
            name, feature = parts.get(1, b""), parts.get(2, b"")
            for kind, values in _fields(feature):
                if kind == 1:  # bytes_list
                    first = next((v for n, v in _fields(values) if n == 1), b"")
                    out[name] = first
    return out


def _read_parquet(partition: dict):
    import pyarrow.parquet as pq

    location = partition["file"]
    fs, path = filesystem(location)
    table = pq.read_table(path, filesystem=fs)
    names = table.column_names
    image = _pick(partition.get("image_column"), names, PARQUET_IMAGE_COLUMNS, location, "image",
                  fallback=[n for n in names if _is_binary(table.schema.field(n).type)])
    ids = _pick(partition.get("id_column"), names, PARQUET_ID_COLUMNS, location, "id", required=False)
    caption = _pick(partition.get("caption_column"), names, PARQUET_CAPTION_COLUMNS, location,
                    "caption", required=False)
    column = table.column(image).to_pylist()
    if column and isinstance(column[0], dict):  # Hugging Face `Image` feature: {bytes, path}
        column = [(v or {}).get("bytes") for v in column]
    stem = location.rstrip("/").rsplit("/", 1)[-1]
    keys = ([str(k) for k in table.column(ids).to_pylist()] if ids
            else [f"{stem}#{i}" for i in range(len(column))])
    keys = _numbered_repeats(keys)
    captions = table.column(caption).to_pylist() if caption else [None] * len(column)
    return [(k, bytes(v or b""), c) for k, v, c in zip(keys, column, captions)]


def _is_binary(arrow_type) -> bool:
    import pyarrow as pa

    return (pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type)
            or (pa.types.is_struct(arrow_type) and arrow_type.get_field_index("bytes") >= 0))


def _pick(chosen, names, candidates, location, what, required=True, fallback=()):
    if chosen is not None:
        if chosen not in names:
            raise DataSpecError(f"{location}: no column {chosen!r} (columns: {', '.join(names)})")
        return chosen
    for name in candidates:
        if name in names:
            return name
    if fallback:
        return fallback[0]
    if required:
        raise DataSpecError(f"{location}: no {what} column (looked for {', '.join(candidates)}; "
                            f"columns: {', '.join(names)}); name it with --{what}-column")
    return None
