"""Machine, versions and date recorded with every benchmark result."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys


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
    for name in ("tensorflow", "keras", "torch", "transformers", "numpy", "jax"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # not installed, or fails to import here
            pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib,
        # Other work on the machine skews ratios (PyTorch's OpenMP suffers most): recorded.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def write_result(path: str, benchmark: str, **fields) -> dict:
    """Write one benchmark's JSON: its name, the machine, the command that made it, `fields`."""
    record = {"benchmark": benchmark, "machine": machine_info(), **fields,
              "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {path}")
    return record
