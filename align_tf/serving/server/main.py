"""The server process: `ServerOptions` (tensorflow_model_server's flags, as a dataclass the
command line fills in) and `serve(options)`, which runs until SIGTERM / SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field, fields

import grpc

from align_tf.errors import ServerConfigError
from align_tf.serving.limits import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_MESSAGE_BYTES, RequestLimits
from align_tf.serving.server.grpc_service import set_health, start_grpc_server
from align_tf.serving.server.manager import ModelManager
from align_tf.serving.server.model_config import (ModelConfig, read_model_config_file, read_text,
                                                  read_text_proto, unwrap)
from align_tf.serving.server.versions import LoadOptions
from align_tf.serving.server.rest import start_rest_server

log = logging.getLogger("align_tf.serving")


def _flag(default, help: str = "", no_effect: str = ""):
    """A tensorflow_model_server flag: its default (TF Serving's, unless said), its help, and,
    for flags that cannot apply to this server, why (logged when the flag is given)."""
    return field(default=default, metadata={"help": help, "no_effect": no_effect})


_TFLITE = "TF Lite models are not served here (SavedModels only)"


@dataclass
class ServerOptions:
    """Everything `serve` reads: every flag of tensorflow_model_server (model_servers/main.cc,
    2.20), by its name, then this server's own two. `align-tf serve` takes them all."""

    port: int = _flag(8500, "gRPC port; 0 turns TCP gRPC off (then --grpc_socket_path is needed)")
    grpc_socket_path: str = _flag("", "also serve gRPC on this UNIX socket (unix:PATH)")
    rest_api_port: int = _flag(0, "REST port; 0 turns REST off")
    rest_api_num_threads: int = _flag(16, "REST requests served at once (TF Serving: 4 x CPUs)")
    rest_api_timeout_in_ms: int = _flag(30000, "REST: a client silent this long is answered 408 and disconnected")
    rest_api_enable_cors_support: bool = _flag(False, "CORS headers on every REST reply")
    enable_batching: bool = _flag(False, "read --batching_parameters_file (its max_batch_size bounds "
                                         "requests; this server does not merge requests)")
    allow_version_labels_for_unavailable_models: bool = _flag(
        False, no_effect="version labels may name any version here")
    batching_parameters_file: str = _flag("", "BatchingParameters text proto (needs --enable_batching)")
    enable_per_model_batching_parameters: bool = _flag(False, no_effect="this server does not batch requests")
    model_config_file: str = _flag("", "text-format ModelServerConfig (model_config_list); overrides "
                                       "--model_name / --model_base_path")
    model_config_file_poll_wait_seconds: float = _flag(0, "re-read --model_config_file this often; 0: never")
    model_name: str = _flag("default", "name of the model")
    model_base_path: str = _flag("", "folder holding numeric version folders")
    num_load_threads: int = _flag(0, no_effect="versions load one at a time here")
    num_unload_threads: int = _flag(0, no_effect="versions unload one at a time here")
    max_num_load_retries: int = _flag(5, "retries of a version that failed to load")
    load_retry_interval_micros: int = _flag(60_000_000, "wait between load retries (microseconds)")
    file_system_poll_wait_seconds: float = _flag(1, "poll base paths for new versions this often; 0: once at start")
    flush_filesystem_caches: bool = _flag(True, no_effect="no file system caches to flush here")
    tensorflow_session_parallelism: int = _flag(0, "intra- and inter-op threads of every Session; 0: TensorFlow's choice")
    tensorflow_session_config_file: str = _flag("", "text-format ConfigProto for every Session")
    tensorflow_intra_op_parallelism: int = _flag(0, "intra-op threads of every Session")
    tensorflow_inter_op_parallelism: int = _flag(0, "inter-op threads of every Session")
    use_alts_credentials: bool = _flag(False, no_effect="ALTS needs Google Cloud; gRPC stays insecure or SSL")
    ssl_config_file: str = _flag("", "SSLConfig text proto: gRPC over TLS (server_key, server_cert, "
                                     "custom_ca, client_verify)")
    platform_config_file: str = _flag("", no_effect="only the 'tensorflow' platform is served here")
    per_process_gpu_memory_fraction: float = _flag(0, "GPU memory fraction of every Session (gpu_options)")
    saved_model_tags: str = _flag("serve", "meta graph tags, comma-separated")
    grpc_channel_arguments: str = _flag("", "comma-separated key=value gRPC arguments, e.g. "
                                            "grpc.max_receive_message_length=8388608 (also bounds REST "
                                            "bodies; default limit 64 MiB)")
    grpc_max_threads: int = _flag(16, "gRPC worker threads (TF Serving: 4 x CPUs)")
    enable_model_warmup: bool = _flag(True, "replay assets.extra/tf_serving_warmup_requests when loading a version")
    num_request_iterations_for_warmup: int = _flag(0, "times each warm-up record is replayed (0: once)")
    version: bool = _flag(False, "print the versions and exit")
    monitoring_config_file: str = _flag("", "MonitoringConfig text proto; prometheus_config serves request counts")
    remove_unused_fields_from_bundle_metagraph: bool = _flag(
        True, no_effect="the meta graph is read for its signatures only")
    prefer_tflite_model: bool = _flag(False, no_effect=_TFLITE)
    num_tflite_pools: int = _flag(0, no_effect=_TFLITE)
    num_tflite_interpreters_per_pool: int = _flag(1, no_effect=_TFLITE)
    enable_signature_method_name_check: bool = _flag(
        False, "Predict runs only predict / classify / regress method signatures (INTERNAL otherwise)")
    xla_cpu_compilation_enabled: bool = _flag(False, "allow XLA JIT compilation on CPU (off: disabled, as TF Serving)")
    xla_gpu_compilation_enabled: bool = _flag(False, "allow XLA JIT compilation on GPU")
    enable_profiler: bool = _flag(True, "TensorFlow's profiler service (tensorflow.ProfilerService) on the gRPC port")
    thread_pool_factory_config_file: str = _flag("", no_effect="Sessions use TensorFlow's own thread pools here")
    mixed_precision: str = _flag("", no_effect="bfloat16 auto mixed precision is a TPU / oneDNN serving option")
    skip_initialize_tpu: bool = _flag(False, no_effect="no TPU here")
    enable_grpc_healthcheck_service: bool = _flag(False, "grpc.health.v1 (served here in any case)")
    enable_serialization_as_tensor_content: bool = _flag(
        False, "gRPC outputs in tensor_content instead of the typed fields (float_val, ...)")
    # Not tensorflow_model_server flags: this server's own.
    bind_address: str = _flag("127.0.0.1", "[local server only] address to listen on; 0.0.0.0 for all interfaces")
    max_batch_size: int = _flag(DEFAULT_MAX_BATCH_SIZE, "[local server only] largest batch (rows) a request may carry")

    def no_effect_flags(self) -> list[str]:
        """The flags given a value other than their default that have no effect here, each with why."""
        return [f"--{f.name}={getattr(self, f.name)}: {f.metadata['no_effect']}" for f in fields(self)
                if f.metadata.get("no_effect") and getattr(self, f.name) != f.default]

    def session_config(self):
        """The ConfigProto of every Session (server.cc: --tensorflow_session_config_file, then the
        GPU memory fraction and the parallelism flags)."""
        from google.protobuf import text_format
        from tensorflow.core.protobuf import config_pb2

        config = config_pb2.ConfigProto()
        if self.tensorflow_session_config_file:
            text = read_text(self.tensorflow_session_config_file, "--tensorflow_session_config_file")
            try:
                text_format.Parse(text, config)
            except text_format.ParseError as e:
                raise ServerConfigError(f"Error parsing text-format tensorflow.ConfigProto: {e} "
                                        f"(--tensorflow_session_config_file {self.tensorflow_session_config_file})") from None
        config.gpu_options.per_process_gpu_memory_fraction = self.per_process_gpu_memory_fraction
        intra, inter = self.tensorflow_intra_op_parallelism, self.tensorflow_inter_op_parallelism
        if intra > 0 and inter > 0 and self.tensorflow_session_parallelism > 0:
            raise ServerConfigError(
                "Either configure server_options.tensorflow_session_parallelism or "
                "(server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) "
                "separately. You cannot configure all.")
        if intra > 0 or inter > 0:
            config.intra_op_parallelism_threads, config.inter_op_parallelism_threads = intra, inter
        else:
            config.intra_op_parallelism_threads = config.inter_op_parallelism_threads = \
                self.tensorflow_session_parallelism
        return config

    def load_options(self) -> LoadOptions:
        return LoadOptions(tags=tuple(self.saved_model_tags.split(",")), warmup=self.enable_model_warmup,
                           session_config=self.session_config(),
                           method_name_check=self.enable_signature_method_name_check,
                           max_num_load_retries=max(self.max_num_load_retries, 0),
                           load_retry_interval_seconds=max(self.load_retry_interval_micros, 0) / 1e6,
                           warmup_iterations=max(self.num_request_iterations_for_warmup, 1))

    def grpc_credentials(self):
        """SSL server credentials from --ssl_config_file (server.cc, BuildServerCredentials), or
        None for an insecure port."""
        if self.use_alts_credentials and self.ssl_config_file:
            raise ServerConfigError("Either use_alts_credentials must be false or ssl_config_file must be empty.")
        if not self.ssl_config_file:
            return None
        ssl = read_text_proto(self.ssl_config_file, "--ssl_config_file")
        log.info("Using SSL credentials")
        return grpc.ssl_server_credentials(
            [(str(ssl.get("server_key", "")).encode(), str(ssl.get("server_cert", "")).encode())],
            root_certificates=str(ssl["custom_ca"]).encode() if ssl.get("custom_ca") else None,
            require_client_auth=bool(ssl.get("client_verify", False)))

    def model_configs(self) -> list[ModelConfig]:
        if self.model_config_file:
            return read_model_config_file(self.model_config_file)
        if self.model_base_path:
            return [ModelConfig(name=self.model_name, base_path=os.path.abspath(self.model_base_path))]
        raise ServerConfigError("give --model_base_path (with --model_name) or --model_config_file")

    def channel_arguments(self) -> list[tuple[str, int | str]]:
        """`--grpc_channel_arguments` as TF Serving takes it: "key=value,key=value"."""
        out = []
        for item in filter(None, (s.strip() for s in (self.grpc_channel_arguments or "").split(","))):
            key, _, value = item.partition("=")
            out.append((key.strip(), int(value) if value.strip().lstrip("-").isdigit() else value.strip()))
        return out

    def max_message_bytes(self) -> int:
        return int(dict(self.channel_arguments()).get("grpc.max_receive_message_length",
                                                      DEFAULT_MAX_MESSAGE_BYTES))

    def batch_limit(self) -> int:
        if self.batching_parameters_file and not self.enable_batching:  # server.cc
            raise ServerConfigError("server_options.batching_parameters_file is set without setting "
                                    "server_options.enable_batching to true.")
        if self.enable_batching and self.batching_parameters_file:
            batching = read_text_proto(self.batching_parameters_file, "--batching_parameters_file")
            limit = int(unwrap(batching.get("max_batch_size", self.max_batch_size)))
            log.warning("batching parameters read for their max_batch_size (%d); this local server "
                        "runs each request on its own and does not merge them", limit)
            return limit
        return self.max_batch_size

    def limits(self) -> RequestLimits:
        """What one request may carry: the message size both as received and once decoded."""
        size = self.max_message_bytes()
        return RequestLimits(max_message_bytes=size, max_decoded_bytes=size, max_batch_size=self.batch_limit())

    def prometheus_path(self) -> str | None:
        if not self.monitoring_config_file:
            return None
        monitoring = read_text_proto(self.monitoring_config_file, "--monitoring_config_file").get(
            "prometheus_config", {})
        return (monitoring.get("path") or "/monitoring/prometheus/metrics") if monitoring.get("enable") else None


def version_text() -> str:
    """What `--version` prints (main.cc): the TF Serving API version this server speaks and
    TensorFlow's."""
    from importlib.metadata import PackageNotFoundError, version

    import tensorflow as tf

    try:
        api = version("tensorflow-serving-api")
    except PackageNotFoundError:
        api = "unknown"
    return f"TensorFlow ModelServer: {api} (align-tf serve)\nTensorFlow Library: {tf.__version__}"


def serve(options: ServerOptions) -> int:
    """Run until SIGTERM / SIGINT."""
    # TensorFlow's own CPU kernels, as in TF Serving's standard build, not oneDNN's: the Session
    # runs inputs of any shape (the graph decides, as in TF Serving), and oneDNN's Conv2D aborts
    # the process on an input of the wrong rank where TensorFlow's answers INVALID_ARGUMENT.
    # Read when TensorFlow starts; TF_ENABLE_ONEDNN_OPTS=1 in the environment keeps oneDNN.
    tf_started = "tensorflow" in sys.modules
    if not tf_started:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if options.version:
        print(version_text())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if tf_started and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        log.warning("TensorFlow was started before serve(): its oneDNN kernels stay on")
    for line in options.no_effect_flags():
        log.warning("flag has no effect on this server: %s", line)
    if options.port == 0 and not options.grpc_socket_path:
        raise ServerConfigError("At least one of server_options.grpc_port or server_options.grpc_socket_path "
                                "must be set.")
    import tensorflow as tf

    if not options.xla_cpu_compilation_enabled and not options.xla_gpu_compilation_enabled:
        tf.config.optimizer.set_jit(False)  # main.cc: DisableXlaCompilation()
    load_options = options.load_options()
    credentials = options.grpc_credentials()
    configs = options.model_configs()
    manager = ModelManager(configs, poll_seconds=options.file_system_poll_wait_seconds,
                           limits=options.limits(),
                           config_file=options.model_config_file,
                           config_file_poll_seconds=options.model_config_file_poll_wait_seconds,
                           load_options=load_options)
    if options.file_system_poll_wait_seconds >= 0:
        manager.poll()  # TF Serving loads what is there before it opens its ports
    manager.start_polling()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    addresses = [f"{options.bind_address}:{options.port}"] if options.port else []
    if options.grpc_socket_path:
        addresses.append("unix:" + options.grpc_socket_path)
    grpc_server, health_servicer = start_grpc_server(
        manager, addresses, options.max_message_bytes(), options.grpc_max_threads, options.channel_arguments(),
        tensor_content=options.enable_serialization_as_tensor_content, credentials=credentials,
        profiler=options.enable_profiler)
    for address in addresses:
        where = f"UNIX socket {options.grpc_socket_path}" if address.startswith("unix:") else address
        print(f"Running gRPC ModelServer at {where} ...", flush=True)
    rest_server = None
    if options.rest_api_port:
        rest_server = start_rest_server(manager, options.bind_address, options.rest_api_port,
                                        options.max_message_bytes(), options.rest_api_num_threads,
                                        options.prometheus_path(),
                                        timeout=max(options.rest_api_timeout_in_ms, 1) / 1000,
                                        cors=options.rest_api_enable_cors_support)
        print(f"Exporting HTTP/REST API at:{options.bind_address}:{options.rest_api_port} ...", flush=True)

    while not stop.wait(0.5):
        set_health(health_servicer, manager)

    print("Shutting down: draining requests", flush=True)
    health_servicer.enter_graceful_shutdown()
    if rest_server is not None:
        rest_server.shutdown()
        rest_server.server_close()
    grpc_server.stop(grace=5).wait(10)
    manager.stop()
    print("Server stopped", flush=True)
    return 0
