"""Two implementations side by side, each in its own worker process, timed alternately.

Each framework's thread pools spin for a while after work; in one process they steal the CPU
from each other (PyTorch's OpenMP barriers suffer most on 2 cores). A worker blocks on its pipe
while the other runs, and each worker's peak RSS (VmHWM) is its own memory. Threads also keep
spinning for a while AFTER a run returns, on the cores the next run needs, so each timed run
starts after `settle_s` of idle time (`--settle-s 0` turns that off, for comparison).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

import numpy as np


_IMPORTED = {}


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and
    exec, so a spawned worker would report at least its parent's RSS at the time of the fork."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mark_imported() -> None:
    """Record the peak RSS after the framework import: the part no model code can change."""
    _IMPORTED["rss"] = peak_rss_mib()


def add_settle_argument(parser, default: float = 1.0) -> None:
    parser.add_argument("--settle-s", type=float, default=default,
                        help="idle seconds before each timed run (threads of the other worker spin down)")


def serve(conn, setup) -> None:
    """Worker loop: `setup()` returns {job kind: fn(data) -> output}; answer jobs until None.
    A setup may call `mark_imported()` once its framework is imported (before the model)."""
    jobs = setup()
    conn.send({"loaded_rss_mib": peak_rss_mib(), "imported_rss_mib": _IMPORTED.get("rss")})
    while True:
        job = conn.recv()
        if job is None:
            conn.send({"peak_rss_mib": peak_rss_mib()})
            return
        kind, data = job
        start = time.perf_counter()
        output = jobs[kind](data)
        conn.send({"seconds": time.perf_counter() - start, "output": output})


class Pair:
    """`Pair(worker, args)`: starts `worker(which, *args, conn)` for which in (reference, ours)
    and any `extra` names (further baselines timed in the same alternation; `compare(...,
    extra=True)` includes them, and their figures are reported against the reference)."""

    NAMES = ("reference", "ours")

    def __init__(self, worker, args=(), settle_s: float = 1.0, extra: tuple = ()):
        self.settle_s = settle_s
        self.extra = tuple(extra)
        ctx = mp.get_context("spawn")
        self.workers = {}
        self.loaded = {}
        self.imported = {}
        for which in self.NAMES + self.extra:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(which, *args, child), daemon=True)
            proc.start()
            self.workers[which] = (proc, parent)
        for which, (_, conn) in self.workers.items():
            answer = conn.recv()
            self.loaded[which], self.imported[which] = answer["loaded_rss_mib"], answer["imported_rss_mib"]

    def _run(self, which, kind, data):
        conn = self.workers[which][1]
        time.sleep(self.settle_s)  # let the other worker's spinning threads go idle
        conn.send((kind, data))
        return conn.recv()

    def compare(self, kind, data, items: int, repeats: int, extra: bool = False) -> dict:
        """One warm-up each, then `repeats` alternating runs; medians and their ratio."""
        names = self.NAMES + (self.extra if extra else ())
        for which in names:
            self._run(which, kind, data)
        seconds = {which: [] for which in names}
        outputs = {}
        for _ in range(repeats):
            for which in names:
                answer = self._run(which, kind, data)
                seconds[which].append(answer["seconds"])
                outputs[which] = answer["output"]
        ref, ours = (float(np.median(seconds[w])) for w in self.NAMES)
        row = {"reference_per_s": items / ref, "ours_per_s": items / ours, "ratio": ref / ours,
               "reference_s": seconds["reference"], "ours_s": seconds["ours"]}
        for which in names[len(self.NAMES):]:
            median = float(np.median(seconds[which]))
            row[f"{which}_per_s"], row[f"{which}_ratio"] = items / median, ref / median
            row[f"{which}_s"] = seconds[which]
        if outputs["reference"] is not None and outputs["ours"] is not None:
            row["max_abs_diff"] = float(np.max(np.abs(np.asarray(outputs["reference"]) - np.asarray(outputs["ours"]))))
        return row

    def close(self) -> dict:
        peak = {}
        for which, (proc, conn) in self.workers.items():
            conn.send(None)
            peak[which] = conn.recv()["peak_rss_mib"]
            proc.join(timeout=60)
        result = {"peak_rss_mib": peak, "loaded_rss_mib": self.loaded,
                  "ratio_peak": peak["ours"] / peak["reference"]}
        for which in self.extra:
            result[f"{which}_peak_rss_mib"] = peak.pop(which)
        if all(self.imported.get(w) for w in self.NAMES):
            # What the model and its inference add on top of the imported framework.
            above = {w: peak[w] - self.imported[w] for w in self.NAMES}
            result.update(imported_rss_mib=self.imported, peak_above_import_mib=above,
                          ratio_peak_above_import=above["ours"] / above["reference"])
        return result
