"""Fixtures of the upstream suite: TF Serving's test models (written once per test session by
models.py into a temp folder), `run_server` (upstream's `RunServer`: `align-tf serve` started
with the exact command line of tensorflow_model_server_test_base.py), and a terminal summary of
the upstream cases run and the ones not applicable here (listed with their reasons in
not_applicable.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from support import align_tf_command, checkout_env, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
# tensorflow_model_server_test_base.py
HTTP_REST_TIMEOUT_MS = 5000
WAIT_FOR_SERVER_READY_INT_SECS = 60
RPC_TIMEOUT = 5.0


def pytest_configure(config):
    config.addinivalue_line("markers", "upstream(file, case): the tensorflow/serving 2.20 test case "
                                       "a test ports (file under tensorflow_serving/, test name)")


@pytest.fixture(scope="session")
def upstream_models(tmp_path_factory) -> dict[str, str]:
    """name -> path: every model (its base path) and config file of upstream's testdata folder."""
    root = tmp_path_factory.mktemp("tf_serving_testdata")
    result = subprocess.run([sys.executable, os.path.join(HERE, "models.py"), str(root)],
                            capture_output=True, text=True, env=checkout_env(), timeout=900)
    assert result.returncode == 0, f"models.py failed:\n{result.stderr[-4000:]}"
    return dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)


def _wait_until_ready(port: int, process: subprocess.Popen, log_path: str) -> None:
    """WaitForServerReady: a Predict for an intentionally missing model until the error's
    details mention 'Servable' (upstream sleeps 1 s between tries, 60 tries)."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "intentionally_missing_model"
    for _ in range(WAIT_FOR_SERVER_READY_INT_SECS * 4):
        if process.poll() is not None:
            with open(log_path, "rb") as f:
                tail = f.read()[-3000:].decode("utf-8", "replace")
            raise AssertionError(f"align-tf serve exited with {process.returncode}:\n{tail}")
        time.sleep(0.25)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, RPC_TIMEOUT)
            except grpc.RpcError as error:
                if "Servable" in (error.details() or ""):
                    return
    raise AssertionError(f"align-tf serve on port {port} not ready after {WAIT_FOR_SERVER_READY_INT_SECS} s")


class Servers:
    """RunServer: one server per distinct set of arguments, reused when called again with the
    same ones; all stopped (their process group killed) at the end of the session."""

    def __init__(self, log_dir: str, socket_path: str):
        self.log_dir, self.socket_path = log_dir, socket_path
        self.running: dict[tuple, tuple] = {}
        self.commands: list[list[str]] = []

    def __call__(self, model_name, model_path, model_type="tf", model_config_file=None,
                 monitoring_config_file=None, batching_parameters_file=None, grpc_channel_arguments="",
                 wait_for_server_ready=True, pipe=None, model_config_file_poll_period=None):
        key = (model_name, model_path, model_type, model_config_file, monitoring_config_file,
               batching_parameters_file, grpc_channel_arguments, wait_for_server_ready, pipe,
               model_config_file_poll_period)
        if key in self.running:
            return self.running[key]
        port, rest_api_port = free_port(), free_port()
        # The command line of RunServer, flag for flag (only the socket path is this session's
        # own: upstream's /tmp/tf-serving.sock would be shared with other test runs).
        command = ["--port=" + str(port), "--rest_api_port=" + str(rest_api_port),
                   "--rest_api_timeout_in_ms=" + str(HTTP_REST_TIMEOUT_MS),
                   "--grpc_socket_path=" + self.socket_path]
        if model_config_file:
            command.append("--model_config_file=" + model_config_file)
        elif model_path:
            command += ["--model_name=" + model_name, "--model_base_path=" + model_path]
        else:
            raise ValueError("Both model_config_file and model_path cannot be empty!")
        if model_type == "tflite":
            command.append("--prefer_tflite_model=true")
        if monitoring_config_file:
            command.append("--monitoring_config_file=" + monitoring_config_file)
        if model_config_file_poll_period is not None:
            command.append("--model_config_file_poll_wait_seconds=" + str(model_config_file_poll_period))
        if batching_parameters_file:
            command += ["--enable_batching", "--batching_parameters_file=" + batching_parameters_file]
        channel_args = ",".join(a for a in [grpc_channel_arguments, "grpc.so_reuseaddr=1"] if a)
        command.append("--grpc_channel_arguments=" + channel_args)
        argv = align_tf_command("serve", *command)
        self.commands.append(argv)
        log_path = os.path.join(self.log_dir, f"server-{port}.log")
        log = open(log_path, "wb")
        process = subprocess.Popen(argv, stdout=log, stderr=pipe if pipe is not None else log,
                                   env=checkout_env(), start_new_session=True)
        if wait_for_server_ready:
            _wait_until_ready(port, process, log_path)
        hostports = (process, f"127.0.0.1:{port}", f"127.0.0.1:{rest_api_port}")
        self.running[key] = hostports
        return hostports

    def log_of(self, process) -> str:
        for p, grpc_address, _ in self.running.values():
            if p is process:
                path = os.path.join(self.log_dir, f"server-{grpc_address.rsplit(':', 1)[1]}.log")
                with open(path, "rb") as f:
                    return f.read().decode("utf-8", "replace")
        return ""

    def stop_all(self) -> None:
        for process, _, _ in self.running.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait(timeout=30)
            for stream in (process.stderr,):
                if stream is not None:
                    stream.close()
        self.running.clear()



@pytest.fixture(scope="session")
def run_server(tmp_path_factory):
    """The session's RunServer (see Servers)."""
    folder = tmp_path_factory.mktemp("servers")
    servers = Servers(str(folder), str(folder / "tf-serving.sock"))
    yield servers
    servers.stop_all()


# Terminal summary: upstream cases run / passed, and the cases not applicable here.
_UPSTREAM_IDS: set[str] = set()
_OUTCOMES: dict[str, str] = {}


def pytest_collection_modifyitems(items):
    _UPSTREAM_IDS.update(item.nodeid for item in items if item.get_closest_marker("upstream"))


def pytest_runtest_logreport(report):
    if report.nodeid not in _UPSTREAM_IDS:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _OUTCOMES[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter):
    if not _OUTCOMES:
        return
    sys.path.insert(0, HERE)
    try:
        from not_applicable import NOT_APPLICABLE
    finally:
        sys.path.remove(HERE)
    counts = {o: sum(1 for v in _OUTCOMES.values() if v == o) for o in ("passed", "failed", "skipped")}
    write = terminalreporter.write_line
    terminalreporter.section("tensorflow/serving 2.20 upstream cases")
    write(f"upstream cases run: {len(_OUTCOMES)}; passed: {counts['passed']}, "
          f"failed: {counts['failed']}, skipped: {counts['skipped']}")
    write(f"not applicable here ({len(NOT_APPLICABLE)}):")
    for case, reason in NOT_APPLICABLE:
        write(f"  {case}: {reason}")
