"""The server process: `ServerOptions` (tensorflow_model_server's flags, as a dataclass the
command line fills in) and `serve(options)`, which runs until SIGTERM / SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass

from align_tf.errors import ServerConfigError
from align_tf.serving.limits import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_MESSAGE_BYTES, RequestLimits
from align_tf.serving.server.grpc_service import set_health, start_grpc_server
from align_tf.serving.server.manager import ModelManager
from align_tf.serving.server.model_config import (ModelConfig, read_model_config_file,
                                                  read_text_proto, unwrap)
from align_tf.serving.server.rest import start_rest_server

log = logging.getLogger("align_tf.serving")


@dataclass
class ServerOptions:
    """Everything `serve` reads. Field names are tensorflow_model_server's flag names, except
    the last two, which are this server's own."""

    port: int = 8500
    rest_api_port: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0
    file_system_poll_wait_seconds: float = 1
    saved_model_tags: str = "serve"
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 16
    rest_api_num_threads: int = 16
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_model_warmup: bool = True
    monitoring_config_file: str = ""
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    enable_serialization_as_tensor_content: bool = False
    rest_api_timeout_in_ms: int = 30000
    enable_signature_method_name_check: bool = False
    bind_address: str = "127.0.0.1"
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE

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


def serve(options: ServerOptions) -> int:
    """Run until SIGTERM / SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if options.tensorflow_intra_op_parallelism or options.tensorflow_inter_op_parallelism:
        import tensorflow as tf

        if options.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(options.tensorflow_intra_op_parallelism)
        if options.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(options.tensorflow_inter_op_parallelism)

    configs = options.model_configs()
    manager = ModelManager(configs, poll_seconds=options.file_system_poll_wait_seconds,
                           limits=options.limits(),
                           tags=tuple(options.saved_model_tags.split(",")),
                           config_file=options.model_config_file,
                           config_file_poll_seconds=options.model_config_file_poll_wait_seconds,
                           warmup=options.enable_model_warmup,
                           method_name_check=options.enable_signature_method_name_check)
    if options.file_system_poll_wait_seconds >= 0:
        manager.poll()  # TF Serving loads what is there before it opens its ports
    manager.start_polling()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    address = f"{options.bind_address}:{options.port}"
    grpc_server, health_servicer = start_grpc_server(
        manager, address, options.max_message_bytes(), options.grpc_max_threads, options.channel_arguments(),
        tensor_content=options.enable_serialization_as_tensor_content)
    print(f"Running gRPC ModelServer at {address} ...", flush=True)
    rest_server = None
    if options.rest_api_port:
        rest_server = start_rest_server(manager, options.bind_address, options.rest_api_port,
                                        options.max_message_bytes(), options.rest_api_num_threads,
                                        options.prometheus_path(),
                                        timeout=max(options.rest_api_timeout_in_ms, 1) / 1000)
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

