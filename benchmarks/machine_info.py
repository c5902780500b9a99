"""Machine, versions and date recorded with every benchmark result."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys

# Distribution names per version key: reading the installed metadata imports nothing (the
# GPU benchmark's JAX side must not import TensorFlow, and importing it costs ~0.5 GiB).
_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly"),
    "keras": ("keras", "keras-nightly"),
    "torch": ("torch",),
    "transformers": ("transformers",),
    "numpy": ("numpy",),
    "jax": ("jax",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino",),
}
# The instruction-set flags that decide which kernels the runtimes pick (bf16, int8 dot products).
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def _version(distributions) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def gpu_info() -> list[dict] | None:
    """Name, driver, memory and CUDA driver version of each NVIDIA GPU (from nvidia-smi, no
    framework import), plus the CUDA / cuDNN versions torch was built with if torch is already
    imported. None when there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        rows = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,pci.bus_id",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=True).stdout
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    cuda_driver = None
    for part in header.split("CUDA Version:")[1:2]:
        cuda_driver = part.split()[0].strip("|")
    gpus = []
    for line in rows.strip().splitlines():
        name, driver, memory, bus = (x.strip() for x in line.split(","))
        gpus.append({"name": name, "driver_version": driver, "memory_total": memory, "pci_bus_id": bus,
                     "cuda_driver_version": cuda_driver})
    torch = sys.modules.get("torch")
    if torch is not None and gpus:
        try:
            gpus[0]["torch_cuda_version"] = torch.version.cuda
            gpus[0]["torch_cudnn_version"] = torch.backends.cudnn.version()
        except Exception:
            pass
    return gpus


def cpu_flags() -> list[str]:
    """The CPU's feature flags (/proc/cpuinfo, first processor); empty where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(line.split(":", 1)[1].split())
    except OSError:
        pass
    return []


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    versions = {}
    for name, distributions in _DISTRIBUTIONS.items():
        version = _version(distributions)
        if version is not None:  # not installed here
            versions[name] = version
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_isa": [flag for flag in _ISA_FLAGS if flag in set(cpu_flags())],
        "memory_gib": memory_gib,
        # Other work on the machine skews ratios (PyTorch's OpenMP suffers most): recorded.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }
    gpus = gpu_info()
    if gpus:
        info["gpus"] = gpus
    return info


def write_result(path: str, benchmark: str, **fields) -> dict:
    """Write one benchmark's JSON: its name, the machine, the command that made it, `fields`."""
    record = {"benchmark": benchmark, "machine": machine_info(), **fields,
              "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {path}")
    return record
