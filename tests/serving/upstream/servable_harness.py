"""The wire form of upstream's servable-level tests (classification_service_test.cc,
regression_service_test.cc, multi_inference_test.cc): where upstream builds a `ServerCore` over
a model and calls the service implementation in-process, these tests start the local server's
`ModelManager` over the same model in-process, with its gRPC PredictionService on 127.0.0.1, and
send the same request over the wire. `method_name_check` is upstream's
`SetSignatureMethodNameCheckFeature` (the server's --enable_signature_method_name_check)."""

from __future__ import annotations

import contextlib

import grpc

from support import free_port

from align_tf.serving.server import ModelConfig, ModelManager, start_grpc_server
from align_tf.serving.server.versions import LoadOptions

TEST_MODEL = "test_model"  # kTestModelName


@contextlib.contextmanager
def servable_server(base_path: str, method_name_check: bool = False, name: str = TEST_MODEL):
    """A PredictionService stub for `name` served from `base_path` (every version loaded before
    the first request, as ServerCore::Create waits for the initial load)."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    manager = ModelManager([ModelConfig(name=name, base_path=base_path)], poll_seconds=0,
                           load_options=LoadOptions(method_name_check=method_name_check))
    manager.poll()
    port = free_port()
    server, _ = start_grpc_server(manager, f"127.0.0.1:{port}", 64 << 20, 4)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    finally:
        channel.close()
        server.stop(0)
        manager.stop()


def call(method, request, timeout: float = 20.0):
    """(status code, details, response): the response is None unless OK."""
    try:
        return grpc.StatusCode.OK, "", method(request, timeout=timeout)
    except grpc.RpcError as error:
        return error.code(), error.details(), None
