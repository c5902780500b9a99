"""`--engine ray` on a real local Ray (loopback only, 2 actors) gives the same output as
`--engine local`; Ctrl-C (SIGINT) to the CLI after some shards, then the same command again,
gives the output of an uninterrupted run; the interrupted run's stderr holds our line only."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from support import checkout_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """One Ray instance for this module, started the way `align-tf embed` starts one."""
    from align_tf.corpus.engines import start_local_ray

    before = listening_sockets()
    start_local_ray(num_cpus=3)
    import ray

    ray.opened_sockets = listening_sockets() - before  # what Ray's start-up began listening on
    yield ray
    ray.shutdown()


def test_local_ray_stays_on_loopback(local_ray):
    nodes = local_ray.nodes()
    assert len(nodes) == 1
    assert nodes[0]["NodeManagerAddress"] == "127.0.0.1"
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    # Every socket Ray's start-up opened listens on loopback (read from /proc/net).
    opened = local_ray.opened_sockets
    assert opened and all(address == "127.0.0.1" for address, _ in opened), opened


def listening_sockets() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket on the machine, from /proc/net."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                if state != "0A":  # LISTEN
                    continue
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                # /proc writes each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                ip = ipaddress.ip_address(raw)
                if ip.version == 6 and ip.ipv4_mapped:
                    ip = ip.ipv4_mapped
                found.add((str(ip), int(port, 16)))
    return found


def test_two_ray_actors_give_the_local_engine_output(local_ray, corpus, tmp_path, embeddings_of):
    from align_tf.corpus import embed_corpus

    output = str(tmp_path / "ray")
    manifest = embed_corpus([corpus["folder"]], output, model=corpus["saved_model"],
                            engine="ray", workers=2, shard_size=8, batch_size=8, progress=False)
    assert manifest["engine"] == "ray" and manifest["counts"]["shards_this_run"] == 8
    local, ray_run = embeddings_of(corpus["output"]), embeddings_of(output)
    assert sorted(ray_run) == sorted(local) == corpus["ids"]
    for key in local:
        np.testing.assert_allclose(ray_run[key], local[key], atol=1e-6)
    with open(os.path.join(output, "errors.jsonl")) as a, \
            open(os.path.join(corpus["output"], "errors.jsonl")) as b:
        assert a.read() == b.read()
    shards = sorted(n for n in os.listdir(output) if n.startswith("shard-"))
    assert shards == sorted(n for n in os.listdir(corpus["output"]) if n.startswith("shard-"))


def cli(*args):
    return [sys.executable, "-m", "align_tf.cli", "embed", *args]


def our_lines(stderr: str) -> list[str]:
    """The lines of an `align-tf embed` stderr that are not its progress bar's."""
    lines = [part.strip() for line in stderr.splitlines() for part in line.split("\r")]
    return [line for line in lines if line and not line.startswith("embedding")]


def test_sigint_then_rerun_equals_an_uninterrupted_run(local_ray, corpus, tmp_path,
                                                       embeddings_of):
    from align_tf.cli import main
    from align_tf.corpus.worker import HOLD_ENV

    output = str(tmp_path / "interrupted")
    # Its own local Ray, 2 actors; Ctrl-C reaches the driver, which stops Ray with its actors.
    # The test-only hold file keeps each actor waiting after its first shard, so the SIGINT
    # finds the job part-way whatever the machine's speed (1 or 2 shards of 31 written).
    hold = tmp_path / "hold"
    hold.touch()
    command = cli("--images", corpus["folder"], "--output", output, "--model",
                  corpus["saved_model"], "--shard-size", "2", "--batch-size", "1",
                  "--engine", "ray", "--workers", "2")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(checkout_env(), **{HOLD_ENV: str(hold)}))
    try:
        deadline = time.time() + 600  # a bound for a stuck start, not a timing assumption
        while not (os.path.isdir(output) and any(n.startswith("shard-") for n in os.listdir(output))):
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.time() < deadline, "no shard written in 600 s"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
    finally:
        hold.unlink()  # lets held actors go should the interruption have failed
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err[-2000:]
    assert our_lines(err) == ["align-tf embed: interrupted"], err[-2000:]  # not a Ray line
    written = [n for n in os.listdir(output) if n.startswith("shard-")]
    with open(os.path.join(output, "manifest.json")) as f:
        assert json.load(f)["status"] == "running"
    assert 1 <= len(written) <= 2, written

    # The same command again, through the CLI's entry point in this process (whose Ray is up:
    # the command uses a running Ray rather than starting one).
    assert main(command[3:]) == 0
    with open(os.path.join(output, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["counts"]["shards_this_run"] == 31 - len(written)
    assert manifest["counts"]["embedded"] == 60 and manifest["counts"]["errors"] == 2
    resumed, uninterrupted = embeddings_of(output), embeddings_of(corpus["output"])
    assert sorted(resumed) == sorted(uninterrupted)
    for key in resumed:
        np.testing.assert_allclose(resumed[key], uninterrupted[key], atol=1e-6)
    with open(os.path.join(output, "errors.jsonl")) as f:
        errors = [json.loads(line) for line in f]
    assert sorted(e["id"] for e in errors) == ["broken/not_an_image.jpg", "photos/truncated.png"]
    assert not [n for n in os.listdir(output) if ".tmp-" in n]
