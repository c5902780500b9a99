"""Implementations side by side, each in its own worker process, timed alternately.

Each framework's thread pools spin for a while after work; in one process they steal the CPU
from each other (PyTorch's OpenMP barriers suffer most on 2 cores). A worker blocks on its pipe
while the other runs, and each worker's peak RSS (VmHWM) is its own memory. Threads also keep
spinning for a while AFTER a run returns, on the cores the next run needs, so each timed run
starts after `settle_s` of idle time (`--settle-s 0` turns that off, for comparison).

`Workers` runs any number of named workers (bench_runtimes.py: one per engine); `Pair` is two of
them, "reference" and "ours", plus optional extra baselines (bench_inference.py, bench_gpu.py).
Every answer carries the job's wall time and the worker's CPU time over it (all its threads):
`cpu_s / seconds` is how many cores the job kept busy.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
import traceback

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


class WorkerError(RuntimeError):
    """A worker raised (its traceback is in the message) or died (killed, out of memory)."""


def serve(conn, setup) -> None:
    """Worker loop: `setup()` returns {job kind: fn(data) -> output}; answer jobs until None.
    A setup may call `mark_imported()` once its framework is imported (before the model).
    An exception in the setup or a job goes back to the caller as its traceback (WorkerError
    there) instead of leaving it waiting on a dead pipe."""
    try:
        jobs = setup()
    except BaseException:
        conn.send({"error": traceback.format_exc()})
        return
    conn.send({"loaded_rss_mib": peak_rss_mib(), "imported_rss_mib": _IMPORTED.get("rss")})
    while True:
        job = conn.recv()
        if job is None:
            conn.send({"peak_rss_mib": peak_rss_mib()})
            return
        kind, data = job
        try:
            cpu, start = time.process_time(), time.perf_counter()
            output = jobs[kind](data)
            seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        except BaseException:
            conn.send({"error": traceback.format_exc()})
            continue
        conn.send({"seconds": seconds, "cpu_s": cpu_s, "output": output})


def _receive(which, conn) -> dict:
    try:
        answer = conn.recv()
    except (EOFError, ConnectionError) as e:
        raise WorkerError(f"worker {which!r} died (killed, or out of memory?)") from e
    if "error" in answer:
        raise WorkerError(f"worker {which!r} failed:\n{answer['error']}")
    return answer


class Workers:
    """`Workers(worker, names, args)`: starts `worker(name, *args, conn)` for each name, each in
    its own spawned process (which calls `serve`), and waits until all have loaded.

    `run(name, kind, data)` answers one job after `settle_s` of idle time; `alternate(...)`
    times several workers on the same job in turn; `close()` ends them and returns each one's
    peak RSS. Use it as a context manager: workers still running on an error are terminated."""

    def __init__(self, worker, names, args=(), settle_s: float = 1.0):
        self.settle_s = settle_s
        self.names = tuple(names)
        ctx = mp.get_context("spawn")
        self.workers = {}
        self.loaded = {}
        self.imported = {}
        try:
            for which in self.names:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=worker, args=(which, *args, child), daemon=True)
                proc.start()
                child.close()  # the parent's copy: a dead worker then reads as EOF here
                self.workers[which] = (proc, parent)
            for which, (_, conn) in self.workers.items():
                answer = _receive(which, conn)
                self.loaded[which] = answer["loaded_rss_mib"]
                self.imported[which] = answer["imported_rss_mib"]
        except BaseException:
            self.terminate()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.terminate()

    def run(self, which, kind, data) -> dict:
        """One job: {"seconds", "cpu_s", "output"}."""
        conn = self.workers[which][1]
        time.sleep(self.settle_s)  # let the other workers' spinning threads go idle
        conn.send((kind, data))
        return _receive(which, conn)

    _run = run  # the name bench_gpu.py calls

    def alternate(self, kind, data, repeats: int, names=None, check=None, rotate: bool = False) -> dict:
        """One warm-up each (its outputs go to `check(outputs)` before anything is timed), then
        `repeats` rounds running every worker once. `rotate` starts each round one worker
        later, so no worker always runs right after the same one.
        Returns {"warmup": {name: output}, "seconds": {name: [...]}, "cpu_s": {name: [...]},
        "output": {name: last output}}."""
        names = tuple(names or self.names)
        warmup = {which: self.run(which, kind, data)["output"] for which in names}
        if check is not None:
            check(warmup)
        seconds = {which: [] for which in names}
        cpu_s = {which: [] for which in names}
        outputs = {}
        for i in range(repeats):
            shift = i % len(names) if rotate else 0
            for which in names[shift:] + names[:shift]:
                answer = self.run(which, kind, data)
                seconds[which].append(answer["seconds"])
                cpu_s[which].append(answer["cpu_s"])
                outputs[which] = answer["output"]
        return {"warmup": warmup, "seconds": seconds, "cpu_s": cpu_s, "output": outputs}

    def close(self) -> dict:
        """End every worker; {name: peak RSS in MiB}."""
        peak = {}
        for which, (proc, conn) in self.workers.items():
            conn.send(None)
            peak[which] = _receive(which, conn)["peak_rss_mib"]
            proc.join(timeout=60)
        self.workers = {}
        return peak

    def terminate(self) -> None:
        for proc, conn in self.workers.values():
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=10)
            conn.close()
        self.workers = {}


class Pair(Workers):
    """`Pair(worker, args)`: starts `worker(which, *args, conn)` for which in (reference, ours)
    and any `extra` names (further baselines timed in the same alternation; `compare(...,
    extra=True)` includes them, and their figures are reported against the reference)."""

    NAMES = ("reference", "ours")

    def __init__(self, worker, args=(), settle_s: float = 1.0, extra: tuple = ()):
        self.extra = tuple(extra)
        super().__init__(worker, self.NAMES + self.extra, args, settle_s)

    def compare(self, kind, data, items: int, repeats: int, extra: bool = False) -> dict:
        """One warm-up each, then `repeats` alternating runs; medians and their ratio."""
        names = self.NAMES + (self.extra if extra else ())
        timed = self.alternate(kind, data, repeats, names)
        seconds, outputs = timed["seconds"], timed["output"]
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
        peak = super().close()
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
