"""The gRPC side: TF Serving's PredictionService and ModelService (the servicer classes of
`tensorflow-serving-api`) plus grpc.health.v1, over a ModelManager."""

from __future__ import annotations

from concurrent import futures

import grpc

from align_tf.errors import ServingError
from align_tf.serving.server import replies
from align_tf.serving.server.manager import ModelManager
from align_tf.serving.server.model_config import model_configs_from_proto
from align_tf.serving.server.versions import VersionState, invalid

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


def requested_version(spec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _abort(context, error: ServingError):
    context.abort(error.code, error.message)


def make_prediction_servicer(manager: ModelManager):
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            try:
                inputs = {}
                for alias, proto in request.inputs.items():
                    try:
                        inputs[alias] = tf.make_ndarray(proto)
                    except Exception:
                        raise invalid(f"tensor parsing error: {alias}") from None
                    if proto.dtype == types_pb2.DT_STRING and inputs[alias].dtype != object:
                        inputs[alias] = inputs[alias].astype(object)
                version, label = requested_version(request.model_spec)
                served_version, signature_name, outputs = manager.predict(
                    request.model_spec.name, version, label, request.model_spec.signature_name,
                    inputs, tuple(request.output_filter))
            except ServingError as e:
                return _abort(context, e)
            response = predict_pb2.PredictResponse(
                model_spec=replies.model_spec(request.model_spec.name, served_version, signature_name))
            for alias, array in outputs.items():
                response.outputs[alias].CopyFrom(tf.make_tensor_proto(array))
            return response

        def GetModelMetadata(self, request, context):
            try:
                version, label = requested_version(request.model_spec)
                return replies.model_metadata_reply(manager, request.model_spec.name, version, label,
                                                    request.metadata_field)
            except ServingError as e:
                return _abort(context, e)

    return PredictionServicer()


def make_model_servicer(manager: ModelManager):
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            try:
                version, label = requested_version(request.model_spec)
                return replies.model_status_reply(manager, request.model_spec.name, version, label)
            except ServingError as e:
                return _abort(context, e)

        def HandleReloadConfigRequest(self, request, context):
            try:
                manager.reload(model_configs_from_proto(request.config))
            except ValueError as e:
                return _abort(context, invalid(str(e)))
            return model_management_pb2.ReloadConfigResponse(status=replies.status_proto(VersionState("OK")))

    return ModelServicer()


def start_grpc_server(manager: ModelManager, address: str, max_message_bytes: int,
                      max_threads: int, channel_arguments: list[tuple[str, int | str]] = ()):
    from grpc_health.v1 import health, health_pb2_grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    options = {"grpc.max_receive_message_length": max_message_bytes,
               "grpc.max_send_message_length": max_message_bytes}
    options.update(dict(channel_arguments))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
                         options=list(options.items()))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        make_prediction_servicer(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(make_model_servicer(manager), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    server.start()
    set_health(health_servicer, manager)
    return server, health_servicer


def set_health(health_servicer, manager: ModelManager) -> None:
    """SERVING for every service while any version is available, else NOT_SERVING."""
    from grpc_health.v1 import health_pb2

    serving = health_pb2.HealthCheckResponse.SERVING if manager.any_available() \
        else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", PREDICTION_SERVICE, MODEL_SERVICE):
        health_servicer.set(service, serving)
