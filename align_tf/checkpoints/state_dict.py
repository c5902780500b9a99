"""Read a Hugging Face checkpoint folder's weights into {key: numpy array}."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from align_tf.checkpoints.torch_pickle import load_torch_state_dict
from align_tf.errors import AssetNotFoundError, CheckpointFormatError

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_NAME = "pytorch_model.bin"


def find_weights_file(folder: str) -> str | None:
    for name in (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, PYTORCH_NAME):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": "bfloat16",
}


class LazySafetensors(Mapping):
    """{key: array} over safetensors files, reading one tensor when it is asked for.

    Plain reads, not a memory map: a mapped checkpoint stays resident and doubles the peak
    memory of loading. Shapes come from the headers (`shape_of`), so checking a checkpoint
    against a model reads no weights. bfloat16 tensors are widened to float32."""

    def __init__(self, paths: list[str]):
        self._entries = {}
        for path in paths:
            with open(path, "rb") as f:
                header_len = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(header_len))
            header.pop("__metadata__", None)
            for key, info in header.items():
                if info["dtype"] not in _SAFETENSORS_DTYPES:
                    raise CheckpointFormatError(f"{path}: tensor {key} has unsupported dtype {info['dtype']}")
                self._entries[key] = (path, 8 + header_len, info)

    def __getitem__(self, key):
        path, base, info = self._entries[key]
        start, end = info["data_offsets"]
        with open(path, "rb") as f:
            f.seek(base + start)
            raw = f.read(end - start)
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        if dtype == "bfloat16":
            array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype)
        return array.reshape(info["shape"])

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def __contains__(self, key):
        return key in self._entries

    def shape_of(self, key) -> tuple:
        return tuple(self._entries[key][2]["shape"])


def read_state_dict(folder: str) -> tuple[Mapping[str, np.ndarray], str]:
    """(state dict, path it came from). Prefers safetensors; `pytorch_model.bin` is read with a
    restricted unpickler that never runs code from the file."""
    path = find_weights_file(folder)
    if path is None:
        raise AssetNotFoundError(
            f"{folder}: no weights found; expected one of {SAFETENSORS_NAME}, "
            f"{SAFETENSORS_INDEX_NAME}, {PYTORCH_NAME} (or model.weights.h5 written by align-tf)"
        )
    if path.endswith(".bin"):
        return load_torch_state_dict(path), path
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return LazySafetensors([os.path.join(folder, shard) for shard in shards]), path
    return LazySafetensors([path]), path
