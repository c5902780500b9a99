"""Where the partitions run: in this process (`local`), or on Ray Data (`ray`): partitions are read
by Ray tasks and embedded by a pool of `PartitionEmbedder` actors (`map_batches` with an actor
pool), one model load per actor. Ray does the scheduling, retries and back-pressure.

A Ray started here stays on loopback: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` before `ray.init`
makes Ray use 127.0.0.1 as the node address and bind there only; the dashboard is off.
"""

from __future__ import annotations

import json
import os
import sys

from align_tf.corpus.worker import PartitionEmbedder, read_partitions
from align_tf.errors import EngineError

ENGINES = ("local", "ray")
LOOPBACK = "127.0.0.1"


def run_local(partitions, worker_kwargs: dict, on_shard, on_batch=None) -> None:
    """The same stages as on Ray, in this process, one partition after the other."""
    embedder = PartitionEmbedder(**worker_kwargs)
    embedder.on_batch = on_batch
    for partition in partitions:
        read = read_partitions({"partition": [json.dumps(partition)]})
        summary = embedder(read)
        on_shard(int(summary["rows"][0]), int(summary["errors"][0]))


def start_local_ray(num_cpus: int, num_gpus: int | None = None) -> None:
    """A Ray instance on this machine, reachable on 127.0.0.1 only, without the dashboard."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by Ray when first imported
    import ray
    from ray._private import ray_constants

    # If Ray was imported before the variable was set, tell its constant the same thing.
    ray_constants.ENABLE_RAY_CLUSTER = False
    # address="local": always a new instance, never a cluster found through RAY_ADDRESS or the
    # file a `ray start` elsewhere on this machine left in /tmp/ray (ray.init's default).
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             log_to_driver=False,
             runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2",
                                       "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}})
    address = ray.nodes()[0]["NodeManagerAddress"]
    if address != LOOPBACK:
        ray.shutdown()
        raise EngineError(f"the local Ray took node address {address}, not {LOOPBACK}; start "
                           "it yourself (ray.init) before calling embed_corpus")


def local_cpus_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_on_ray(partitions, worker_kwargs: dict, on_shard, *, workers: int = 1,
               cpus_per_worker: float | None = None, gpus_per_worker: float = 0,
               ray_address: str | None = None, ray_progress: bool = False) -> None:
    """Embed `partitions` on Ray: the running Ray if one is initialised, the cluster at
    `ray_address`, or a local loopback instance started (and stopped) here."""
    ray = sys.modules.get("ray")
    started_here = ray is None or not ray.is_initialized()
    ray_address = ray_address or os.environ.get("RAY_ADDRESS") or None
    if started_here and ray_address:
        import ray

        ray.init(address=ray_address, log_to_driver=False)
    elif started_here:
        cpus_per_worker = cpus_per_worker or local_cpus_per_worker(workers)
        # One CPU beyond the actors' for the read tasks, however few cores there are.
        start_local_ray(num_cpus=int(max(os.cpu_count() or 1, workers * cpus_per_worker + 1)))
    import ray
    import ray.data

    cpus_per_worker = cpus_per_worker or 1
    if not gpus_per_worker:
        worker_kwargs = dict(worker_kwargs, threads=max(1, int(cpus_per_worker)))
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = ray_progress
        context.print_on_execution_start = ray_progress
        dataset = ray.data.from_items([{"partition": json.dumps(p)} for p in partitions],
                                      override_num_blocks=len(partitions))
        dataset = dataset.map_batches(read_partitions, batch_size=1)
        dataset = dataset.map_batches(
            PartitionEmbedder, fn_constructor_kwargs=worker_kwargs, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None)
        for row in dataset.iter_rows():
            on_shard(int(row["rows"]), int(row["errors"]))
    finally:
        if started_here:
            ray.shutdown()
