"""`align-tf embed` throughput: --engine local against Ray Data with 1 and 2 actors on this
machine, with start-up overhead and peak memory per worker. Writes benchmarks/results/embed.json.

Each run is the real command in a child process (`python -m align_tf.cli embed ...`) over the
same generated JPEG folder and the same exported SavedModel (align-base size, random weights):

    python benchmarks/bench_embed.py [--images 96] [--shard-size 12] [--model-size base|tiny]
                                     [--gpus-per-worker 1]

- images_per_s: the run's images / its wall time, start-up included (what a user waits).
- steady_images_per_s: rows of the shards finished after the first `workers` shards, over the
  time between those finishes (shard file times): throughput once every worker is running.
- startup_s: wall time - images / steady_images_per_s (Python + TensorFlow import, Ray start,
  actor start, model load).
- peak_rss_mib per worker: the largest resident memory seen (sampled every 0.2 s from /proc) of
  the CLI process (local) or of each Ray actor process running PartitionEmbedder.
- decode_s_per_image: decode + resize + crop alone (the image processor's graph), per image,
  with TensorFlow's default threads; decode_s_per_image_one_thread: the same on one thread (the
  cost per core): the CPU work a GPU worker still does for every image.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT]

from machine_info import write_result  # noqa: E402


def write_images(folder: str, count: int, seed: int = 0) -> None:
    """Photo-like JPEGs (smooth colour fields plus grain), 400x320, in 4 subfolders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:320, 0:400].astype(np.float32)
    for i in range(count):
        sub = os.path.join(folder, f"part{i % 4}")
        os.makedirs(sub, exist_ok=True)
        phase = rng.uniform(0, 6.3, 3)
        field = np.stack([np.sin(x / (40 + 9 * c) + y / (55 + 7 * c) + phase[c]) for c in range(3)], -1)
        pixels = 127 + 100 * field + rng.normal(0, 12, field.shape)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            os.path.join(sub, f"img{i:04d}.jpg"), quality=90)


def export_model(size: str, folder: str) -> str:
    from align_tf.export import export_saved_model
    from align_tf.models.align import AlignModel

    if size == "base":
        from align_tf.configuration import AlignConfig
        from align_tf.training.recipe import make_processor

        model, processor = AlignModel(AlignConfig()), make_processor()
    else:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from support import tiny_model, tiny_processor

        model, processor = tiny_model(), tiny_processor()
    if not model.built:
        model.build()
    return export_saved_model(model, processor, folder, version=1, warmup=False)


def decode_seconds_per_image(folder: str, threads: int | None = None) -> float:
    """Decode + resize + crop as the exported graph does them (the same image processor, in a
    tf.function), per image, on a batch of 32. With `threads`, in a child process whose
    TensorFlow uses that many threads (1: the cost per core)."""
    if threads:
        code = ("import sys, tensorflow as tf; "
                f"tf.config.threading.set_intra_op_parallelism_threads({threads}); "
                f"tf.config.threading.set_inter_op_parallelism_threads({threads}); "
                f"sys.path[:0] = [{ROOT!r}, {HERE!r}]; import bench_embed; "
                f"print(bench_embed.decode_seconds_per_image({folder!r}))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        return float(done.stdout.strip().splitlines()[-1])
    import tensorflow as tf

    from align_tf.preprocessing.image import AlignImageProcessor

    processor = AlignImageProcessor()
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs)[:32]
    data = tf.constant([open(f, "rb").read() for f in files])
    run = tf.function(lambda d: processor.preprocess_bytes(d, training=False))
    run(data)  # trace
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run(data).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / len(files)


class MemorySampler:
    """Peak VmRSS per process (the CLI child and every Ray process running PartitionEmbedder)."""

    def __init__(self, root_pid: int):
        self.root_pid = root_pid
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(0.2):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmdline = f.read()
                    if int(pid) != self.root_pid and b"PartitionEmbedder" not in cmdline:
                        continue
                    with open(f"/proc/{pid}/status") as f:
                        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
                except (OSError, StopIteration, ValueError):
                    continue
                self.peaks[int(pid)] = max(self.peaks.get(int(pid), 0), rss / 1024)


def run_embed(images: str, saved_model: str, output: str, engine: str, workers: int,
              batch_size: int, shard_size: int, gpus_per_worker: float = 0) -> dict:
    command = [sys.executable, "-m", "align_tf.cli", "embed", "--images", images, "--output", output,
               "--model", saved_model, "--engine", engine, "--workers", str(workers),
               "--batch-size", str(batch_size), "--shard-size", str(shard_size)]
    if engine == "ray" and gpus_per_worker:
        command += ["--gpus-per-worker", str(gpus_per_worker)]
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with MemorySampler(process.pid) as memory:
        out, err = process.communicate()
    wall = time.time() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{err[-3000:]}")
    shards = sorted((os.path.getmtime(os.path.join(output, n)), n) for n in os.listdir(output)
                    if n.startswith("shard-"))
    import pyarrow.parquet as pq

    rows = {n: pq.read_metadata(os.path.join(output, n)).num_rows for _, n in shards}
    total = sum(rows.values())
    window = shards[workers - 1:]
    steady = (sum(rows[n] for _, n in window[1:]) / (window[-1][0] - window[0][0])
              if len(window) > 1 and window[-1][0] > window[0][0] else None)
    workers_rss = ([memory.peaks[process.pid]] if engine == "local"
                   else [v for pid, v in memory.peaks.items() if pid != process.pid])
    result = {"engine": engine, "workers": workers, "images": total, "wall_s": round(wall, 2),
              "images_per_s": round(total / wall, 3),
              "steady_images_per_s": round(steady, 3) if steady else None,
              "startup_s": round(wall - total / steady, 2) if steady else None,
              "peak_rss_mib_per_worker": sorted(round(v) for v in workers_rss),
              "cli_line": out.strip().splitlines()[-1] if out.strip() else ""}
    print(result, flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--shard-size", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model-size", choices=("base", "tiny"), default="base")
    parser.add_argument("--gpus-per-worker", type=float, default=0,
                        help="GPUs per Ray actor (on a GPU machine; the local run uses the GPU "
                             "TensorFlow sees)")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "embed.json"))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench_embed_")
    images = os.path.join(work, "images")
    write_images(images, args.images)
    start = time.time()
    saved_model = export_model(args.model_size, os.path.join(work, "saved_model"))
    print(f"exported {saved_model} in {time.time() - start:.1f} s", flush=True)
    decode_one_thread = decode_seconds_per_image(images, threads=1)
    decode = decode_seconds_per_image(images)
    runs = []
    for engine, workers in (("local", 1), ("ray", 1), ("ray", 2)):
        runs.append(run_embed(images, saved_model, os.path.join(work, f"{engine}-{workers}"),
                              engine, workers, args.batch_size, args.shard_size,
                              args.gpus_per_worker))
    local = runs[0]
    ratios = {f"{r['engine']}_{r['workers']}_over_local": {
        "images_per_s": round(r["images_per_s"] / local["images_per_s"], 3),
        "steady_images_per_s": (round(r["steady_images_per_s"] / local["steady_images_per_s"], 3)
                                if r["steady_images_per_s"] and local["steady_images_per_s"] else None)}
        for r in runs[1:]}
    per_image = 1 / local["steady_images_per_s"] if local["steady_images_per_s"] else None
    write_result(args.output, "embed_corpus", model_size=args.model_size, images=args.images,
                 gpus_per_worker=args.gpus_per_worker,
                 image_size="400x320 JPEG", batch_size=args.batch_size, shard_size=args.shard_size,
                 decode_s_per_image=round(decode, 5),
                 decode_s_per_image_one_thread=round(decode_one_thread, 5),
                 model_s_per_image_local=round(per_image, 4) if per_image else None,
                 runs=runs, ratios=ratios)


if __name__ == "__main__":
    main()
