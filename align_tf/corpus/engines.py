"""Where the partitions run: in this process (`local`), or on Ray Data (`ray`): partitions are read
by Ray tasks and embedded by a pool of `PartitionEmbedder` actors (`map_batches` with an actor
pool), one model load per actor. Ray does the scheduling, retries and back-pressure.

Which Ray: one already initialised in this process; else the cluster the user names
(`ray_address`, or the `RAY_ADDRESS` variable); else a new local instance started here, whatever
else runs on the machine (`address="local"`: never a cluster found through the
`ray_current_cluster` file that a `ray start` left in Ray's temp folder, live or dead).

A Ray started here stays on loopback: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` before `ray.init`
makes Ray use 127.0.0.1 as the node address and bind there only; the dashboard is off. The same
setting is used to join a cluster at a loopback address (otherwise Ray rewrites 127.0.0.1 into
the machine's network address, where a head started on loopback does not listen).
"""

from __future__ import annotations

import json
import os
import socket
import sys

from align_tf.corpus.worker import HOLD_ENV, PartitionEmbedder, read_partitions
from align_tf.errors import EngineError

ENGINES = ("local", "ray")
LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
# How a cluster with token authentication (Ray 2.5x's default once a token exists) takes the token.
TOKEN_HELP = ("if the cluster uses token authentication, give this process its token: "
              "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> (or RAY_AUTH_TOKEN_PATH=<file "
              "holding it>; `ray get-auth-token` on the head prints it)")


def run_local(partitions, worker_kwargs: dict, on_shard, on_batch=None) -> None:
    """The same stages as on Ray, in this process, one partition after the other."""
    embedder = PartitionEmbedder(**worker_kwargs)
    embedder.on_batch = on_batch
    for partition in partitions:
        read = read_partitions({"partition": [json.dumps(partition)]})
        summary = embedder(read)
        on_shard(int(summary["rows"][0]), int(summary["errors"][0]))


def stay_on_loopback() -> None:
    """Make this process's Ray use 127.0.0.1 as its node address (and bind there)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by Ray when first imported
    from ray._private import ray_constants

    # If Ray was imported before the variable was set, tell its constant the same thing.
    ray_constants.ENABLE_RAY_CLUSTER = False


def worker_env(verbose: bool) -> dict:
    """Environment variables for the workers of a Ray started here."""
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    if not verbose:
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if os.environ.get(HOLD_ENV):
        env[HOLD_ENV] = os.environ[HOLD_ENV]
    return env


def start_local_ray(num_cpus: int, num_gpus: int | None = None, verbose: bool = False) -> None:
    """A new Ray instance on this machine, reachable on 127.0.0.1 only, without the dashboard.
    Workers' output reaches this process's stderr only with `verbose`."""
    stay_on_loopback()
    import ray

    # address="local": always a new instance, never a cluster found through RAY_ADDRESS or the
    # file a `ray start` elsewhere on this machine left in /tmp/ray (ray.init's default).
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             log_to_driver=verbose, runtime_env={"env_vars": worker_env(verbose)})
    address = ray.nodes()[0]["NodeManagerAddress"]
    if address != LOOPBACK:
        ray.shutdown()
        raise EngineError(f"the local Ray took node address {address}, not {LOOPBACK}; start "
                           "it yourself (ray.init) before calling embed_corpus")


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of `host:port` or `ray://host:port`; None for "auto" and other forms."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)


def join_cluster(address: str, verbose: bool = False) -> None:
    """`ray.init` on the cluster at `address`; an address where nothing answers, or a cluster
    that refuses this process, is one EngineError that says what to do."""
    parts = split_address(address)
    if parts and parts[0] in LOOPBACK_NAMES:
        stay_on_loopback()
    if parts:
        host, port = parts
        try:  # nothing listening: say so now, not after Ray's minute of retries
            socket.create_connection((host.strip("[]"), port), timeout=10).close()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise EngineError(f"no Ray cluster answers at {address} ({reason}): start its head "
                              f"there (`ray start --head --port {port}`), or leave out "
                              "--ray-address / RAY_ADDRESS to run on a local Ray started here") from None
    import ray

    try:
        ray.init(address=address, log_to_driver=verbose)
    except (ConnectionError, ray.exceptions.RayError) as error:
        detail = " ".join(str(error).split(". Ensure")[0].split())
        raise EngineError(f"could not join the Ray cluster at {address} ({detail}); "
                          f"{TOKEN_HELP}") from None


def local_cpus_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_on_ray(partitions, worker_kwargs: dict, on_shard, *, workers: int = 1,
               cpus_per_worker: float | None = None, gpus_per_worker: float = 0,
               ray_address: str | None = None, ray_progress: bool = False,
               verbose: bool = False) -> None:
    """Embed `partitions` on Ray: the running Ray if one is initialised, the cluster at
    `ray_address` (or `RAY_ADDRESS`), or a new local loopback instance started (and stopped)
    here. `verbose`: the workers' output is shown here (Ray's `log_to_driver`)."""
    ray = sys.modules.get("ray")
    started_here = ray is None or not ray.is_initialized()
    ray_address = ray_address or os.environ.get("RAY_ADDRESS") or None
    if started_here and ray_address:
        join_cluster(ray_address, verbose)
    elif started_here:
        cpus_per_worker = cpus_per_worker or local_cpus_per_worker(workers)
        # One CPU beyond the actors' for the read tasks, however few cores there are.
        start_local_ray(num_cpus=int(max(os.cpu_count() or 1, workers * cpus_per_worker + 1)),
                        verbose=verbose)
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
