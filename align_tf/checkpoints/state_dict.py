"""Read a Hugging Face checkpoint folder's weights into {key: numpy array}."""

from __future__ import annotations

import json
import os

import numpy as np

from align_tf.checkpoints.torch_pickle import load_torch_state_dict

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_NAME = "pytorch_model.bin"


def find_weights_file(folder: str) -> str | None:
    for name in (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, PYTORCH_NAME):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    # framework="numpy" cannot read bfloat16; go through raw bytes for those.
    with safe_open(path, framework="numpy") as f:
        for key in f.keys():
            out[key] = f.get_tensor(key)
    return out


def read_state_dict(folder: str) -> tuple[dict[str, np.ndarray], str]:
    """(state dict, path it came from). Prefers safetensors; `pytorch_model.bin` is read with a
    restricted unpickler that never runs code from the file."""
    path = find_weights_file(folder)
    if path is None:
        raise FileNotFoundError(
            f"{folder}: no weights found; expected one of {SAFETENSORS_NAME}, "
            f"{SAFETENSORS_INDEX_NAME}, {PYTORCH_NAME} (or model.weights.h5 written by align-tf)"
        )
    if path.endswith(".bin"):
        return load_torch_state_dict(path), path
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(_load_safetensors(os.path.join(folder, shard)))
        return state, path
    return _load_safetensors(path), path
