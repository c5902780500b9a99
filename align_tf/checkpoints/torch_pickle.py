"""Read a PyTorch `pytorch_model.bin` (zip + pickle) into numpy arrays without executing its code.

The pickle is unpickled with an allow-list: tensors, storages and ordered dicts rebuild from
numpy; any other global (`os.system`, `builtins.eval`, ...) is refused before it is resolved.
torch is not needed.
"""

from __future__ import annotations

import collections
import pickle
import zipfile

import numpy as np

from align_tf.errors import CheckpointFormatError, CheckpointSecurityError  # noqa: F401  (public here too)


_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if not size:
        return np.array(storage[storage_offset])
    itemsize = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    ).copy()


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


def _bfloat16_to_float32(raw: bytes) -> np.ndarray:
    halves = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
    return halves.view(np.float32)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointSecurityError(
            f"refusing to load {module}.{name} from the checkpoint pickle: a weights file should "
            "hold only tensors; this one asks to import other code (it may be malicious). "
            "Convert it to safetensors with a tool you trust, or use a safetensors checkpoint"
        )

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise CheckpointSecurityError(f"unexpected persistent id in checkpoint pickle: {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointSecurityError(f"unexpected storage type {storage_type!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            dtype = _STORAGE_DTYPES[storage_type.name]
            if dtype == "bfloat16":
                self._storages[key] = _bfloat16_to_float32(raw)
            else:
                self._storages[key] = np.frombuffer(raw, dtype=dtype)
        return self._storages[key]


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """{key: numpy array} from a torch zip checkpoint, never running code from the file."""
    if not zipfile.is_zipfile(path):
        raise CheckpointFormatError(
            f"{path}: not a zip-format PyTorch checkpoint (torch >= 1.6 writes zip files); "
            "the legacy tar/pickle format is not supported"
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointFormatError(f"{path}: expected one data.pkl in the archive, found {pickles}")
        prefix = pickles[0][: -len("/data.pkl")]
        with archive.open(pickles[0]) as f:
            state = _RestrictedUnpickler(f, archive, prefix).load()
    if not isinstance(state, dict):
        raise CheckpointFormatError(f"{path}: the pickle holds a {type(state).__name__}, not a state dict")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    bad = [k for k, v in state.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointFormatError(f"{path}: entries that are not tensors: {bad[:10]}")
    return dict(state)
