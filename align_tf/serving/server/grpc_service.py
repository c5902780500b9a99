"""The gRPC side: TF Serving's PredictionService and ModelService (the servicer classes of
`tensorflow-serving-api`) plus grpc.health.v1, over a ModelManager."""

from __future__ import annotations

from concurrent import futures

import grpc

from align_tf.errors import EngineError, ServingError
from align_tf.serving.server import replies
from align_tf.serving.server.inference_apis import DEFAULT_SIGNATURE, regressions_to_proto
from align_tf.serving.tensor_proto import encode_tensor_proto
from align_tf.serving.server.manager import ModelManager
from align_tf.serving.server.model_config import model_configs_from_proto
from align_tf.serving.server.profiler import profiler_handler
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


def _model_spec(request):
    """The request's ModelSpec, or INVALID_ARGUMENT "Missing ModelSpec" as TF Serving answers
    (predict_impl.cc, get_model_status_impl.cc, get_model_metadata_impl.cc)."""
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")
    return request.model_spec


def make_prediction_servicer(manager: ModelManager, tensor_content: bool = False):
    """PredictionService. Outputs go in the typed fields (`float_val`, ...) as TF Serving writes
    them by default, or in `tensor_content` (`--enable_serialization_as_tensor_content`)."""
    from tensorflow_serving.apis import (classification_pb2, model_pb2, predict_pb2,
                                         prediction_service_pb2_grpc, regression_pb2)

    class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            try:
                spec = _model_spec(request)
                version, label = requested_version(spec)
                served_version, signature_name, outputs = manager.predict(
                    spec.name, version, label, spec.signature_name, dict(request.inputs),
                    tuple(request.output_filter))
            except ServingError as e:
                return _abort(context, e)
            response = predict_pb2.PredictResponse(
                model_spec=replies.model_spec(spec.name, served_version, signature_name))
            for alias, array in outputs.items():
                response.outputs[alias].CopyFrom(encode_tensor_proto(array, tensor_content))
            return response

        def GetModelMetadata(self, request, context):
            try:
                spec = _model_spec(request)
                version, label = requested_version(spec)
                return replies.model_metadata_reply(manager, spec.name, version, label,
                                                    request.metadata_field)
            except ServingError as e:
                return _abort(context, e)

        def Classify(self, request, context):
            try:
                spec = _model_spec(request)  # classification_service.cc
                version, label = requested_version(spec)
                served_version, result = manager.classify(spec.name, version, label, spec.signature_name,
                                                          request.input)
                response = classification_pb2.ClassificationResponse(model_spec=replies.model_spec(
                    spec.name, served_version, spec.signature_name or DEFAULT_SIGNATURE))
                result.to_proto(response.result)
            except ServingError as e:
                return _abort(context, e)
            return response

        def Regress(self, request, context):
            try:
                spec = _model_spec(request)  # regression_service.cc
                version, label = requested_version(spec)
                served_version, values = manager.regress(spec.name, version, label, spec.signature_name,
                                                         request.input)
            except ServingError as e:
                return _abort(context, e)
            response = regression_pb2.RegressionResponse(model_spec=replies.model_spec(
                spec.name, served_version, spec.signature_name or DEFAULT_SIGNATURE))
            regressions_to_proto(values, response.result)
            return response

        def MultiInference(self, request, context):
            try:  # multi_inference_helper.cc: the first task's ModelSpec picks the servable
                spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
                version, label = requested_version(spec)
                return manager.multi_inference(request, version, label)
            except ServingError as e:
                return _abort(context, e)

    return PredictionServicer()


def make_model_servicer(manager: ModelManager):
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            try:
                spec = _model_spec(request)
                version, _ = requested_version(spec)  # a label is ignored, as TF Serving does
                return replies.model_status_reply(manager, spec.name, version)
            except ServingError as e:
                return _abort(context, e)

        def HandleReloadConfigRequest(self, request, context):
            try:
                manager.reload(model_configs_from_proto(request.config))
            except ValueError as e:
                return _abort(context, invalid(str(e)))
            return model_management_pb2.ReloadConfigResponse(status=replies.status_proto(VersionState("OK")))

    return ModelServicer()


def start_grpc_server(manager: ModelManager, address: str | list[str], max_message_bytes: int,
                      max_threads: int, channel_arguments: list[tuple[str, int | str]] = (),
                      tensor_content: bool = False, credentials=None, profiler: bool = True):
    """The gRPC server on one address or several ("host:port", "unix:PATH"), insecure or with
    `credentials` (grpc.ssl_server_credentials); TensorFlow's profiler service too unless
    `profiler` is off (--enable_profiler)."""
    from grpc_health.v1 import health, health_pb2_grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    options = {"grpc.max_receive_message_length": max_message_bytes,
               "grpc.max_send_message_length": max_message_bytes}
    options.update(dict(channel_arguments))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
                         options=list(options.items()))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        make_prediction_servicer(manager, tensor_content), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(make_model_servicer(manager), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if profiler:
        server.add_generic_rpc_handlers((profiler_handler(),))
    for where in [address] if isinstance(address, str) else address:
        bound = server.add_secure_port(where, credentials) if credentials is not None \
            else server.add_insecure_port(where)
        if bound == 0:
            raise EngineError(f"cannot bind gRPC to {where}")
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
