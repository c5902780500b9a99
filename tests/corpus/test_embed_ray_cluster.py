"""`align-tf embed --engine ray` and the Ray clusters around it, on loopback only.

A Ray head started here (`ray start --head --block --node-ip-address=127.0.0.1` with
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 and token authentication on, in its own process group, killed
by it at the end): joined with --ray-address and its token, it gives the local engine's output;
without the token, or at an address where nothing listens, the command prints one line and exits 2.
Without --ray-address the command starts its own local Ray, whatever the `ray_current_cluster`
file in Ray's temp folder names: the live head, or a head that is gone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from support import REPO_ROOT, checkout_env, free_port

pytestmark = pytest.mark.slow
pytest.importorskip("ray")


def ray_temp_folder() -> str:
    """A folder for RAY_TMPDIR, short because Ray's socket paths live under it."""
    return tempfile.mkdtemp(prefix="rayt-", dir="/tmp")


def embed_env(ray_tmpdir: str, **extra) -> dict:
    env = checkout_env()
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    env["RAY_TMPDIR"] = ray_tmpdir
    env.update(extra)
    return env


def embed(output, corpus, *args, env) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "align_tf.cli", "embed", "--images", corpus["folder"],
               "--output", str(output), "--model", corpus["saved_model"], "--shard-size", "8",
               "--batch-size", "8", "--engine", "ray", "--workers", "1", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def our_lines(stderr: str) -> list[str]:
    """The lines of an `align-tf embed` stderr that are not its progress bar's."""
    lines = [part.strip() for line in stderr.splitlines() for part in line.split("\r")]
    return [line for line in lines if line and not line.startswith("embedding")]


def sessions(ray_tmpdir: str) -> set[str]:
    folder = os.path.join(ray_tmpdir, "ray")
    return {n for n in os.listdir(folder) if n.startswith("session_2")} if os.path.isdir(folder) else set()


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """{"address", "token", "tmpdir"} of a Ray head on 127.0.0.1 with token authentication."""
    tmpdir = ray_temp_folder()
    port = free_port()
    token = secrets.token_hex(32)
    env = embed_env(tmpdir, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token",
                    RAY_AUTH_TOKEN=token)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    ray_command = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    log_path = tmp_path_factory.mktemp("head") / "head.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [ray_command, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={port}", "--num-cpus=2", "--object-store-memory=200000000",
             "--include-dashboard=false", "--disable-usage-stats"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address_file = os.path.join(tmpdir, "ray", "ray_current_cluster")
    try:
        deadline = time.time() + 300  # a bound for a stuck start
        while not os.path.exists(address_file):
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        with open(address_file) as f:
            assert f.read().strip() == f"127.0.0.1:{port}"
        yield {"address": f"127.0.0.1:{port}", "token": token, "tmpdir": tmpdir}
    finally:
        # The whole process group (`ray start`, its GCS, raylet and agents), then the workers the
        # raylet started in groups of their own: every process with this RAY_TMPDIR.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        deadline = time.time() + 60
        while (left := processes_with_env(f"RAY_TMPDIR={tmpdir}")) and time.time() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        shutil.rmtree(tmpdir, ignore_errors=True)
        assert not left, f"processes of the test's Ray head outlived it: {left}"


def processes_with_env(entry: str) -> list[int]:
    """Ids of this user's processes whose environment holds `entry` ("NAME=value")."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if entry.encode() in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:  # gone, or not ours
            continue
    return found


def assert_equals_local(output, corpus, embeddings_of):
    ours, local = embeddings_of(str(output)), embeddings_of(corpus["output"])
    assert sorted(ours) == sorted(local) == corpus["ids"]
    for key in local:
        np.testing.assert_allclose(ours[key], local[key], atol=1e-6)
    with open(os.path.join(output, "errors.jsonl")) as a, \
            open(os.path.join(corpus["output"], "errors.jsonl")) as b:
        assert a.read() == b.read()


def test_the_head_joined_with_its_token_gives_the_local_output(head, corpus, tmp_path,
                                                                 embeddings_of):
    """--verbose keeps Ray's own lines (here: joining the cluster)."""
    run = embed(tmp_path / "cluster", corpus, "--ray-address", head["address"], "--verbose",
                env=embed_env(head["tmpdir"], RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head["token"]))
    assert run.returncode == 0, run.stderr[-3000:]
    assert_equals_local(tmp_path / "cluster", corpus, embeddings_of)
    assert f"Connecting to existing Ray cluster at address: {head['address']}" in run.stderr


def test_without_the_token_or_where_nothing_listens_one_line_and_exit_2(head, corpus, tmp_path):
    run = embed(tmp_path / "no-token", corpus, "--ray-address", head["address"],
                env=embed_env(head["tmpdir"]))
    assert run.returncode == 2, run.stderr[-3000:]
    lines = our_lines(run.stderr)
    assert len(lines) == 1, run.stderr[-3000:]
    assert lines[0].startswith(f"align-tf embed: could not join the Ray cluster at {head['address']}")
    assert "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=" in lines[0]

    nowhere = f"127.0.0.1:{free_port()}"
    run = embed(tmp_path / "nowhere", corpus, "--ray-address", nowhere,
                env=embed_env(head["tmpdir"]))
    assert run.returncode == 2, run.stderr[-3000:]
    assert our_lines(run.stderr) == [
        f"align-tf embed: no Ray cluster answers at {nowhere} (Connection refused): start its "
        f"head there (`ray start --head --port {nowhere.split(':')[1]}`), or leave out "
        "--ray-address / RAY_ADDRESS to run on a local Ray started here"]


def test_without_an_address_a_running_head_is_left_alone(head, corpus, tmp_path, embeddings_of):
    """The cluster file names the live head; the command starts a Ray of its own (a new session
    in the same temp folder) and prints nothing of Ray's."""
    before = sessions(head["tmpdir"])
    run = embed(tmp_path / "beside", corpus, env=embed_env(head["tmpdir"]))
    assert run.returncode == 0, run.stderr[-3000:]
    assert our_lines(run.stderr) == [], run.stderr[-3000:]
    assert_equals_local(tmp_path / "beside", corpus, embeddings_of)
    assert len(sessions(head["tmpdir"]) - before) == 1


def test_without_an_address_a_stale_cluster_file_is_ignored(corpus, tmp_path, embeddings_of):
    """The cluster file names a head that is gone (what `ray start` leaves behind it)."""
    tmpdir = ray_temp_folder()
    try:
        os.makedirs(os.path.join(tmpdir, "ray"))
        with open(os.path.join(tmpdir, "ray", "ray_current_cluster"), "w") as f:
            f.write(f"127.0.0.1:{free_port()}")
        run = embed(tmp_path / "stale", corpus, env=embed_env(tmpdir))
        assert run.returncode == 0, run.stderr[-3000:]
        assert our_lines(run.stderr) == [], run.stderr[-3000:]
        assert_equals_local(tmp_path / "stale", corpus, embeddings_of)
        assert len(sessions(tmpdir)) == 1
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
