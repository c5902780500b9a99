"""The status and metadata replies, built once as TF Serving's protos: the gRPC services return
them as they are, the REST handler writes them as JSON the way TF Serving's does."""

from __future__ import annotations

import grpc

from align_tf.errors import ServingError
from align_tf.serving.server.manager import ModelManager
from align_tf.serving.server.versions import VersionState, invalid


def model_spec(name: str, version: int, signature_name: str | None = None):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=name)
    spec.version.value = version
    if signature_name is not None:
        spec.signature_name = signature_name
    return spec


def status_proto(state: VersionState):
    from tensorflow_serving.apis import status_pb2

    return status_pb2.StatusProto(error_code=state.error_code.value[0], error_message=state.error_message)


def model_status_reply(manager: ModelManager, name: str, version: int | None):
    """GetModelStatusResponse for every version of a model, or for one version. A version label
    is not an argument: TF Serving's GetModelStatus reads only the name and the version and
    lists every version when no number is given (model_servers/get_model_status_impl.cc)."""
    from tensorflow_serving.apis import get_model_status_pb2

    try:
        if not name:  # no model is named "": the monitor has no versions for it
            raise ServingError(grpc.StatusCode.NOT_FOUND, "")
        states = manager.model(name).status(version)
    except ServingError as e:
        if e.code != grpc.StatusCode.NOT_FOUND:
            raise
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}"
                           if version is not None else f"Could not find any versions of model {name}") from None
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state in states:
        response.model_version_status.add(
            version=v, state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state),
            status=status_proto(state))
    return response


def model_metadata_reply(manager: ModelManager, name: str, version: int | None, label: str | None,
                         fields=("signature_def",)):
    """GetModelMetadataResponse with the version's SignatureDefMap packed under "signature_def"."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    fields = list(fields)
    if not fields:
        raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for f in fields:
        if f != "signature_def":
            raise invalid(f"Metadata field {f} is not supported")
    served = manager.model(name).get(version, label)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in served.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=model_spec(name, served.version))
    response.metadata["signature_def"].Pack(signature_map)
    return response


def reply_to_json(reply) -> dict:
    """A status or metadata reply as TF Serving's REST API writes it: proto field names, every
    field printed, and the metadata's `Any` unpacked (http_rest_api_util.cc, ToJsonString)."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    def as_dict(message):
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    if isinstance(reply, get_model_metadata_pb2.GetModelMetadataResponse):
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if not reply.metadata["signature_def"].Unpack(signature_map):
            raise ServingError(grpc.StatusCode.INTERNAL, "Failed to unpack 'Any' object to 'SignatureDefMap'.")
        return {"model_spec": as_dict(reply.model_spec), "metadata": {"signature_def": as_dict(signature_map)}}
    return as_dict(reply)
