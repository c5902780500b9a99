"""Run benchmarks/bench_gpu.py with TensorFlow, tensorflow_text and PIL imports refused, in the
driver and in every worker process, as on the GPU machine (which has none of them).

    JAX_PLATFORMS=cpu python benchmarks/device/no_tf.py --device cpu --tiny --output /tmp/gpu_tiny.json

The blocked packages look uninstalled: every `sys.meta_path` finder is wrapped so that it does
not find them, so `import tensorflow` raises ModuleNotFoundError and `importlib.util.find_spec`
returns None (availability probes, as torch and transformers make, see "absent", as on the
GPU machine; a finder that raised from find_spec would break those probes instead). It is
installed here and, through the ALIGN_BENCH_BLOCK_IMPORTS environment variable, by
bench_gpu.py in each spawned worker. Imports and probes that libraries try and tolerate (Keras
and matplotlib try PIL, torch probes tensorflow) are recorded as `refused_attempts` in the
result JSON, with the file and line that asked; a hard dependency fails the run.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback

BLOCKED = ("tensorflow", "tensorflow_text", "PIL")
ENV = "ALIGN_BENCH_BLOCK_IMPORTS"


class _Hiding:
    """Wraps one meta-path finder: blocked top-level names are not found, the rest delegates."""

    _align_bench_blocker = True

    def __init__(self, finder, names, attempts):
        self._finder = finder
        self._names = frozenset(names)
        self._attempts = attempts  # one list shared by the wrappers of a process

    def __getattr__(self, attribute):  # find_distributions, invalidate_caches, ...
        return getattr(self._finder, attribute)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self._names:
            frames = [f for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            if [name, where] not in self._attempts:
                self._attempts.append([name, where])
            return None
        find_spec = getattr(self._finder, "find_spec", None)
        return find_spec(name, path, target) if find_spec else None


def install(names=BLOCKED) -> None:
    """Hide `names` from every import finder in this process (idempotent). Modules already
    imported would stay usable, so that is an error."""
    names = [n for n in names if n]
    if any(getattr(f, "_align_bench_blocker", False) for f in sys.meta_path):
        return
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in names)
    if loaded:
        raise RuntimeError(f"already imported before the blocker: {loaded}")
    attempts = []
    sys.meta_path[:] = [_Hiding(f, names, attempts) for f in sys.meta_path]


def attempts() -> list:
    """Refused imports / availability probes so far in this process: [name, asking file:line]."""
    for finder in sys.meta_path:
        if getattr(finder, "_align_bench_blocker", False):
            return [list(a) for a in finder._attempts]
    return []


if __name__ == "__main__":
    os.environ[ENV] = ",".join(BLOCKED)
    install(BLOCKED)
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench_gpu.py")
    sys.argv = [bench, *sys.argv[1:]]
    runpy.run_path(bench, run_name="__main__")
