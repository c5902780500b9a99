"""A local stand-in for `tensorflow_model_server`: TF Serving's gRPC and REST APIs over SavedModels.

For development and CI, where no TF Serving binary can be installed. It speaks the same wire
protocol (the servicer classes of `tensorflow-serving-api`, the REST routes and JSON formats),
loads versions the way TF Serving does (version policy, polling the base path) and answers
errors with TF Serving's status codes. It is not a production server: no request batching,
no GPU memory management, Python threads around `tf.saved_model.load`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np

from align_tf.serving.client import ServingError

log = logging.getLogger("align_tf.serving")

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 256
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"

# TF Serving's gRPC status -> HTTP status (model_servers/http_server.cc).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401,
}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


# -- configuration files ----------------------------------------------------------------------
@dataclass
class ModelConfig:
    """One entry of `model_config_list` (TF Serving's ModelConfig)."""

    name: str
    base_path: str
    policy: str = "latest"            # latest | all | specific
    num_versions: int = 1             # for latest
    versions: tuple[int, ...] = ()    # for specific
    version_labels: dict[str, int] = field(default_factory=dict)


def read_model_config_file(path: str) -> list[ModelConfig]:
    """Parse a `--model_config_file` (text-format ModelServerConfig)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(path, encoding="utf-8") as f:
        text = f.read()
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as e:
        raise ValueError(f"{path}: not a text-format ModelServerConfig: {e}") from None
    return model_configs_from_proto(proto)


def model_configs_from_proto(proto) -> list[ModelConfig]:
    if proto.WhichOneof("config") != "model_config_list":
        raise ValueError("only model_config_list is supported (not custom_model_config)")
    configs = []
    for c in proto.model_config_list.config:
        if c.model_platform not in ("", "tensorflow"):
            raise ValueError(f"model {c.name!r}: model_platform {c.model_platform!r}; only 'tensorflow'")
        policy = c.model_version_policy.WhichOneof("policy_choice") or "latest"
        configs.append(ModelConfig(  # a relative base_path is relative to the working directory
            name=c.name, base_path=c.base_path, policy=policy,
            num_versions=max(1, c.model_version_policy.latest.num_versions or 1),
            versions=tuple(c.model_version_policy.specific.versions),
            version_labels=dict(c.version_labels)))
    return configs


def read_text_proto(path: str) -> dict:
    """A small reader for the text protos TF Serving takes whose Python classes are not shipped
    (BatchingParameters, MonitoringConfig): nested `name { ... }` blocks and `name: value`."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"#[^\n]*", "", f.read())
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"]+', text)
    pos = 0

    def value(token: str):
        if token.startswith('"'):
            return json.loads(token)
        if token in ("true", "false"):
            return token == "true"
        try:
            return int(token)
        except ValueError:
            try:
                return float(token)
            except ValueError:
                return token

    def block() -> dict:
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != "}":
            name = tokens[pos]
            pos += 1
            if pos < len(tokens) and tokens[pos] == ":":
                pos += 1
            if pos < len(tokens) and tokens[pos] == "{":
                pos += 1
                item = block()
                pos += 1  # the closing brace
            else:
                item = value(tokens[pos])
                pos += 1
            if name in out:  # repeated field
                out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [item]
            else:
                out[name] = item
        return out

    return block()


def _wrapped(value):
    """BatchingParameters wraps numbers as `{ value: N }`."""
    return value.get("value") if isinstance(value, dict) else value


# -- models and versions ----------------------------------------------------------------------
class LoadedVersion:
    """One loaded SavedModel version: its signature defs (as TF Serving reads them from
    saved_model.pb) and its callable signatures."""

    def __init__(self, name: str, version: int, path: str, tags: tuple[str, ...] = ("serve",),
                 warmup: bool = True):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

        from align_tf.protocol import read_saved_model_proto

        self.name, self.version, self.path = name, version, path
        proto = read_saved_model_proto(path)
        meta_graphs = [m for m in proto.meta_graphs if set(tags) <= set(m.meta_info_def.tags)]
        if not meta_graphs:
            raise ValueError(f"{path}: no meta graph with tags {list(tags)}")
        self.signature_defs = meta_graphs[0].signature_def
        self.loaded = tf.saved_model.load(path, tags=list(tags))
        self.functions = dict(self.loaded.signatures)
        self.input_specs = {name: fn.structured_input_signature[1] for name, fn in self.functions.items()}
        self.warmup_requests = self.replay_warmup() if warmup else 0

    def replay_warmup(self) -> int:
        """Run `assets.extra/tf_serving_warmup_requests` (Predict records) as TF Serving does at
        load time; a failing record fails the load."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        from align_tf.protocol import WARMUP_FILE

        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.isfile(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            log = prediction_log_pb2.PredictionLog.FromString(record)
            if log.WhichOneof("log_type") != "predict_log":
                continue  # classify / regress records: this server has no such API
            request = log.predict_log.request
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            self.run(request.model_spec.signature_name or "serving_default", inputs)
            count += 1
        return count

    def run(self, signature_name: str, inputs: dict, output_filter=(), max_batch_size=None) -> dict:
        import tensorflow as tf

        signature = self.signature_defs.get(signature_name)
        if signature is None or signature_name not in self.functions:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found.')
        expected = set(signature.inputs)
        if set(inputs) != expected:
            raise _invalid(
                f"input size does not match signature: {len(inputs)}!={len(expected)} "
                f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(set(inputs) - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - set(inputs)))}}}.")
        for alias in output_filter:
            if alias not in signature.outputs:
                raise _invalid(f"output tensor alias not found in signature: {alias} Outputs expected "
                               f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
        specs = self.input_specs[signature_name]
        tensors = {}
        for alias, array in inputs.items():
            spec = specs[alias]
            if not tf.TensorShape(array.shape).is_compatible_with(spec.shape):
                raise _invalid(f"{alias}: shape {list(array.shape)} is not compatible with the "
                               f"signature's {spec.shape.as_list()}")
            if max_batch_size and array.ndim and array.shape[0] > max_batch_size:
                raise _invalid(f"{alias}: Task size {array.shape[0]} is larger than maximum input "
                               f"batch size {max_batch_size}")
            given = "string" if array.dtype == object or array.dtype.kind == "S" else array.dtype.name
            if given != spec.dtype.name:
                raise _invalid(f"{alias}: expects {spec.dtype.name} but {given} is provided")
            tensors[alias] = tf.constant(array, dtype=spec.dtype)
        try:
            outputs = self.functions[signature_name](**tensors)
        except tf.errors.OpError as e:
            code = _CODE_BY_NUMBER.get(e.error_code, grpc.StatusCode.UNKNOWN)
            raise ServingError(code, op_error_message(e)) from None
        names = list(output_filter) or sorted(outputs)
        return {n: outputs[n].numpy() for n in names}


def op_error_message(error) -> str:
    """The op's own words from a TensorFlow error, without the 'Graph execution error' frame,
    stack traces and node names."""
    skip = ("Graph execution error", "Detected at node", "<stack traces", "\t", " ")
    lines = [line for line in error.message.split("\n") if line.strip() and not line.startswith(skip)]
    return " ".join(lines) or error.message.strip()


@dataclass
class VersionState:
    state: str                 # START | LOADING | AVAILABLE | UNLOADING | END
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


class ServedModel:
    """A model name: the versions on disk under its base path, loaded per its version policy."""

    def __init__(self, config: ModelConfig, tags: tuple[str, ...] = ("serve",), warmup: bool = True):
        self.config = config
        self.tags = tags
        self.warmup = warmup
        self.versions: dict[int, LoadedVersion] = {}
        self.states: dict[int, VersionState] = {}
        self._lock = threading.Lock()
        self._failed: dict[int, float] = {}  # version -> mtime of the attempt that failed

    def versions_on_disk(self) -> list[int]:
        base = self.config.base_path
        if not os.path.isdir(base):
            return []
        return sorted(int(n) for n in os.listdir(base)
                      if n.isdigit() and os.path.isfile(os.path.join(base, n, "saved_model.pb")))

    def aspired_versions(self) -> list[int]:
        on_disk = self.versions_on_disk()
        if self.config.policy == "all":
            return on_disk
        if self.config.policy == "specific":
            return [v for v in on_disk if v in self.config.versions]
        return on_disk[-self.config.num_versions:]

    def poll(self) -> None:
        """Load aspired versions that are not loaded, unload the others (TF Serving loads the
        new version before it unloads the old one, so requests never see no version)."""
        aspired = self.aspired_versions()
        for version in aspired:
            if version in self.versions:
                continue
            path = os.path.join(self.config.base_path, str(version))
            stamp = os.path.getmtime(os.path.join(path, "saved_model.pb"))
            if self._failed.get(version) == stamp:
                continue  # failed before and unchanged since
            with self._lock:
                self.states[version] = VersionState("LOADING")
            try:
                loaded = LoadedVersion(self.config.name, version, path, self.tags, self.warmup)
            except Exception as e:  # a broken version must not take the server down
                log.error("model %s version %d failed to load: %s", self.config.name, version, e)
                self._failed[version] = stamp
                with self._lock:
                    self.states[version] = VersionState("END", grpc.StatusCode.UNKNOWN, str(e)[:500])
                continue
            with self._lock:
                self.versions[version] = loaded
                self.states[version] = VersionState("AVAILABLE")
            log.info("Successfully loaded servable version {name: %s version: %d} (%d warm-up requests)",
                     self.config.name, version, loaded.warmup_requests)
        with self._lock:
            for version in [v for v in self.versions if v not in aspired]:
                del self.versions[version]  # in-flight requests keep their reference
                self.states[version] = VersionState("END")
                log.info("Unloaded servable version {name: %s version: %d}", self.config.name, version)

    def get(self, version: int | None = None, label: str | None = None) -> LoadedVersion:
        with self._lock:
            if label:
                if label not in self.config.version_labels:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Unrecognized servable version label: {label}")
                version = self.config.version_labels[label]
            if version is not None:
                if version not in self.versions:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Servable not found for request: Specific({self.config.name}, {version})")
                return self.versions[version]
            if not self.versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Latest({self.config.name})")
            return self.versions[max(self.versions)]

    def status(self, version: int | None = None) -> list[tuple[int, VersionState]]:
        with self._lock:
            if version is not None:
                if version not in self.states:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Could not find version {version} of model {self.config.name}")
                return [(version, self.states[version])]
            if not self.states:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find any versions of model {self.config.name}")
            return sorted(self.states.items(), reverse=True)


class ModelManager:
    """All served models, a polling thread, and the request-level checks."""

    def __init__(self, configs: list[ModelConfig], poll_seconds: float = 1.0,
                 max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE, tags=("serve",),
                 config_file: str | None = None, config_file_poll_seconds: float = 0,
                 warmup: bool = True):
        self.warmup = warmup
        self.models = {c.name: ServedModel(c, tuple(tags), warmup) for c in configs}
        self.poll_seconds = poll_seconds
        self.max_batch_size = max_batch_size
        self.tags = tuple(tags)
        self.config_file = config_file
        self.config_file_poll_seconds = config_file_poll_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._models_lock = threading.Lock()
        self.counters: dict[tuple[str, str, str], int] = {}
        self._counter_lock = threading.Lock()

    def poll(self) -> None:
        with self._models_lock:
            models = list(self.models.values())
        for model in models:
            model.poll()

    def start_polling(self) -> None:
        def loop(interval, action):
            while not self._stop.wait(interval):
                try:
                    action()
                except Exception:  # keep polling after a bad moment on disk
                    log.exception("polling failed")

        if self.poll_seconds > 0:
            self._threads.append(threading.Thread(target=loop, args=(self.poll_seconds, self.poll),
                                                  name="file-system-poll", daemon=True))
        if self.config_file and self.config_file_poll_seconds > 0:
            self._threads.append(threading.Thread(
                target=loop, args=(self.config_file_poll_seconds, self.reload_config_file),
                name="config-file-poll", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def reload_config_file(self) -> None:
        self.reload(read_model_config_file(self.config_file))

    def reload(self, configs: list[ModelConfig]) -> None:
        """Replace the model list (HandleReloadConfigRequest); unchanged models keep their versions."""
        with self._models_lock:
            current = self.models
            updated = {}
            for c in configs:
                keep = current.get(c.name)
                updated[c.name] = keep if keep is not None and keep.config == c \
                    else ServedModel(c, self.tags, self.warmup)
            self.models = updated
        self.poll()

    def model(self, name: str) -> ServedModel:
        with self._models_lock:
            model = self.models.get(name)
        if model is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({name})")
        return model

    def any_available(self) -> bool:
        with self._models_lock:
            models = list(self.models.values())
        return any(m.versions for m in models)

    def predict(self, name: str, version: int | None, label: str | None, signature_name: str,
                inputs: dict, output_filter=()) -> tuple[int, str, dict]:
        signature_name = signature_name or "serving_default"
        status = "OK"
        try:
            served = self.model(name).get(version, label)
            return served.version, signature_name, served.run(
                signature_name, inputs, output_filter, self.max_batch_size)
        except ServingError as e:
            status = e.code.name
            raise
        finally:
            with self._counter_lock:
                key = (name, signature_name, status)
                self.counters[key] = self.counters.get(key, 0) + 1

    def prometheus_text(self) -> str:
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._counter_lock:
            for (name, signature, status), count in sorted(self.counters.items()):
                lines.append(f':tensorflow:serving:request_count{{model_name="{name}",'
                             f'signature_name="{signature}",status="{status}"}} {count}')
        return "\n".join(lines) + "\n"


# -- gRPC -------------------------------------------------------------------------------------
def _model_spec(spec_in, version: int, signature_name: str | None = None):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=spec_in.name)
    spec.version.value = version
    if signature_name is not None:
        spec.signature_name = signature_name
    return spec


def _requested_version(spec) -> tuple[int | None, str | None]:
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
    from tensorflow_serving.apis import (get_model_metadata_pb2, predict_pb2,
                                         prediction_service_pb2_grpc)

    class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            try:
                inputs = {}
                for alias, proto in request.inputs.items():
                    try:
                        inputs[alias] = tf.make_ndarray(proto)
                    except Exception:
                        raise _invalid(f"tensor parsing error: {alias}") from None
                    if proto.dtype == types_pb2.DT_STRING and inputs[alias].dtype != object:
                        inputs[alias] = inputs[alias].astype(object)
                version, label = _requested_version(request.model_spec)
                served_version, signature_name, outputs = manager.predict(
                    request.model_spec.name, version, label, request.model_spec.signature_name,
                    inputs, tuple(request.output_filter))
            except ServingError as e:
                return _abort(context, e)
            response = predict_pb2.PredictResponse(
                model_spec=_model_spec(request.model_spec, served_version, signature_name))
            for alias, array in outputs.items():
                response.outputs[alias].CopyFrom(tf.make_tensor_proto(array))
            return response

        def GetModelMetadata(self, request, context):
            try:
                fields = list(request.metadata_field)
                if not fields:
                    raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
                for f in fields:
                    if f != "signature_def":
                        raise _invalid(f"Metadata field {f} is not supported")
                version, label = _requested_version(request.model_spec)
                served = manager.model(request.model_spec.name).get(version, label)
            except ServingError as e:
                return _abort(context, e)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in served.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature)
            response = get_model_metadata_pb2.GetModelMetadataResponse(
                model_spec=_model_spec(request.model_spec, served.version))
            response.metadata["signature_def"].Pack(signature_map)
            return response

    return PredictionServicer()


def _status_proto(state: VersionState):
    from tensorflow_serving.apis import status_pb2

    return status_pb2.StatusProto(error_code=state.error_code.value[0], error_message=state.error_message)


def make_model_servicer(manager: ModelManager):
    from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2,
                                         model_service_pb2_grpc)

    class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            try:
                version, label = _requested_version(request.model_spec)
                model = manager.model(request.model_spec.name)
                if label:
                    version = model.get(None, label).version
                states = model.status(version)
            except ServingError as e:
                return _abort(context, e)
            response = get_model_status_pb2.GetModelStatusResponse()
            for v, state in states:
                response.model_version_status.add(
                    version=v, state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state),
                    status=_status_proto(state))
            return response

        def HandleReloadConfigRequest(self, request, context):
            try:
                manager.reload(model_configs_from_proto(request.config))
            except ValueError as e:
                return _abort(context, _invalid(str(e)))
            return model_management_pb2.ReloadConfigResponse(status=_status_proto(VersionState("OK")))

    return ModelServicer()


def start_grpc_server(manager: ModelManager, address: str, max_message_bytes: int,
                      max_threads: int, channel_arguments: list[tuple[str, int | str]] = ()):
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)]
    options = dict(options)
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
    serving = health_pb2.HealthCheckResponse.SERVING if manager.any_available() \
        else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", PREDICTION_SERVICE, MODEL_SERVICE):
        health_servicer.set(service, serving)
    return server, health_servicer


# -- REST -------------------------------------------------------------------------------------
_PREDICT_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(predict|classify|regress)")
_STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?")


def _decode_json_strings(value):
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise _invalid("Unable to base64 decode") from None
        raise _invalid(f"JSON object {json.dumps(value)[:80]} is not a string tensor value "
                       '(only {"b64": ...} objects are)')
    if isinstance(value, list):
        return [_decode_json_strings(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    raise _invalid(f"JSON Value: {json.dumps(value)[:80]} is not of expected type: string")


def json_to_array(value, dtype, alias: str) -> np.ndarray:
    """A JSON value (nested lists) to the array a signature input of `dtype` takes."""
    if dtype.name == "string":
        array = np.array(_decode_json_strings(value), dtype=object)
        if any(isinstance(v, list) for v in array.flat):
            raise _invalid(f"{alias}: ragged lists are not a tensor")
        return array
    try:
        array = np.asarray(value)
    except ValueError:
        raise _invalid(f"{alias}: ragged lists are not a tensor") from None
    if array.dtype == object or array.dtype.kind in "USb" and dtype.name != "bool":
        raise _invalid(f"{alias}: JSON values are not of expected type: {dtype.name}")
    if dtype.is_integer and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise _invalid(f"{alias}: JSON values are not of expected type: {dtype.name}")
    return array.astype(dtype.as_numpy_dtype)


def _array_to_json(array: np.ndarray, alias: str):
    if array.dtype == object or array.dtype.kind in "SU":
        encode = (lambda b: {"b64": base64.b64encode(b).decode("ascii")}) if alias.endswith("_bytes") \
            else (lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b))
        return np.vectorize(encode, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def parse_predict_body(body: dict, input_specs: dict) -> tuple[dict, str]:
    """TF Serving's request JSON (row "instances" or columnar "inputs") -> (arrays, format)."""
    if not isinstance(body, dict):
        raise _invalid("JSON Value: request body is not an object")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise _invalid("Missing 'inputs' or 'instances' key" if not has_instances
                       else "Not both 'inputs' and 'instances' keys can be specified")
    names = sorted(input_specs)
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise _invalid("'instances' must be a list")
        if instances and all(isinstance(i, dict) and not set(i) == {"b64"} for i in instances):
            keys = set(instances[0])
            if any(set(i) != keys for i in instances):
                raise _invalid("Expecting object with the same keys in every instance")
            columns = {k: [i[k] for i in instances] for k in keys}
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise _invalid(f"instances must be objects naming the inputs {names}")
        fmt = "row"
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and not set(inputs) == {"b64"}:
            columns = inputs
        elif len(names) == 1:
            columns = {names[0]: inputs}
        else:
            raise _invalid(f"'inputs' must be an object naming the inputs {names}")
        fmt = "columnar"
    arrays = {}
    for alias, value in columns.items():
        spec = input_specs.get(alias)
        if spec is None:  # the signature check reports the set difference
            arrays[alias] = np.asarray([])
            continue
        arrays[alias] = json_to_array(value, spec.dtype, alias)
    return arrays, fmt


def outputs_to_json(outputs: dict, fmt: str) -> dict:
    if fmt == "columnar":
        if len(outputs) == 1:
            (alias, array), = outputs.items()
            return {"outputs": _array_to_json(array, alias)}
        return {"outputs": {alias: _array_to_json(a, alias) for alias, a in outputs.items()}}
    if len(outputs) == 1:
        (alias, array), = outputs.items()
        return {"predictions": _array_to_json(array, alias)}
    sizes = {alias: (a.shape[0] if a.ndim else None) for alias, a in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise _invalid(f"Tensors with inconsistent batch sizes {sizes} cannot be written as "
                       "rows; use the columnar 'inputs' format")
    columns = {alias: _array_to_json(a, alias) for alias, a in outputs.items()}
    n = next(iter(sizes.values()))
    return {"predictions": [{alias: columns[alias][i] for alias in columns} for i in range(n)]}


def _message_json(message) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, manager: ModelManager, max_body_bytes: int, num_threads: int,
                 prometheus_path: str | None):
        super().__init__(address, RestHandler)
        self.manager = manager
        self.max_body_bytes = max_body_bytes
        self.slots = threading.BoundedSemaphore(num_threads)
        self.prometheus_path = prometheus_path


class RestHandler(BaseHTTPRequestHandler):
    server: RestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: one line per request would drown the test logs
        log.debug("%s " + fmt, self.address_string(), *args)

    def _reply(self, status: int, payload, content_type="application/json"):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: ServingError):
        self._reply(HTTP_STATUS.get(error.code, 500), {"error": error.message})

    def do_GET(self):
        path = self.path.split("?")[0]
        if self.server.prometheus_path and path == self.server.prometheus_path:
            return self._reply(200, self.server.manager.prometheus_text().encode(), "text/plain")
        match = _STATUS_PATH.fullmatch(path)
        if not match:
            return self._reply(404, {"error": f"Malformed request: GET {path}"})
        with self.server.slots:
            try:
                self._reply(200, self._status_or_metadata(*match.groups()))
            except ServingError as e:
                self._error(e)

    def _status_or_metadata(self, name, version, label, metadata):
        from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

        if not name:
            raise _invalid("Missing model name in request.")
        model = self.server.manager.model(name)
        version = int(version) if version else None
        if metadata:
            served = model.get(version, label)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in served.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature)
            return {"model_spec": {"name": name, "signature_name": "", "version": str(served.version)},
                    "metadata": {"signature_def": _message_json(signature_map)}}
        if label:
            version = model.get(None, label).version
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state in model.status(version):
            response.model_version_status.add(
                version=v, state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state),
                status=_status_proto(state))
        return _message_json(response)

    def do_POST(self):
        path = self.path.split("?")[0]
        match = _PREDICT_PATH.fullmatch(path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.max_body_bytes:
            self.close_connection = True
            return self._reply(413, {"error": f"Request body of {length} bytes is larger than the "
                                              f"limit of {self.server.max_body_bytes} bytes"})
        body = self.rfile.read(length)
        if not match:
            return self._reply(404, {"error": f"Malformed request: POST {path}"})
        name, version, label, method = match.groups()
        if method.lower() != "predict":
            return self._error(ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{method} needs a classify/regress signature over tf.Example; use :predict"))
        with self.server.slots:
            try:
                self._reply(200, self._predict(name, int(version) if version else None, label, body))
            except ServingError as e:
                self._error(e)

    def _predict(self, name, version, label, body: bytes) -> dict:
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise _invalid(f"JSON Parse error: {e}") from None
        signature_name = (request.get("signature_name") if isinstance(request, dict) else None) \
            or "serving_default"
        manager = self.server.manager
        served = manager.model(name).get(version, label)
        specs = served.input_specs.get(signature_name)
        if specs is None:  # TF Serving's REST handler says INVALID_ARGUMENT here
            raise _invalid(f'Serving signature name: "{signature_name}" not found in signature def')
        arrays, fmt = parse_predict_body(request, specs)
        _, _, outputs = manager.predict(name, served.version, None, signature_name, arrays)
        return outputs_to_json(outputs, fmt)


def start_rest_server(manager: ModelManager, host: str, port: int, max_body_bytes: int,
                      num_threads: int, prometheus_path: str | None = None) -> RestServer:
    server = RestServer((host, port), manager, max_body_bytes, num_threads, prometheus_path)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                     name="rest", daemon=True).start()
    return server


# -- the process ------------------------------------------------------------------------------
def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """`--grpc_channel_arguments` as TF Serving takes it: "key=value,key=value"."""
    out = []
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        key, _, value = item.partition("=")
        out.append((key.strip(), int(value) if value.strip().lstrip("-").isdigit() else value.strip()))
    return out


def serve(args) -> int:
    """Run until SIGTERM / SIGINT. `args` are the `align-tf serve` flags."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.tensorflow_intra_op_parallelism or args.tensorflow_inter_op_parallelism:
        import tensorflow as tf

        if args.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        if args.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)

    if args.model_config_file:
        configs = read_model_config_file(args.model_config_file)
    elif args.model_base_path:
        configs = [ModelConfig(name=args.model_name, base_path=os.path.abspath(args.model_base_path))]
    else:
        raise SystemExit("give --model_base_path (with --model_name) or --model_config_file")

    max_batch_size = args.max_batch_size
    if args.enable_batching and args.batching_parameters_file:
        batching = read_text_proto(args.batching_parameters_file)
        max_batch_size = int(_wrapped(batching.get("max_batch_size", max_batch_size)))
        log.warning("batching parameters read for their max_batch_size (%d); this local server "
                    "runs each request on its own and does not merge them", max_batch_size)
    prometheus_path = None
    if args.monitoring_config_file:
        monitoring = read_text_proto(args.monitoring_config_file).get("prometheus_config", {})
        if monitoring.get("enable"):
            prometheus_path = monitoring.get("path") or "/monitoring/prometheus/metrics"

    channel_arguments = parse_channel_arguments(args.grpc_channel_arguments)
    max_message = dict(channel_arguments).get("grpc.max_receive_message_length",
                                              DEFAULT_MAX_MESSAGE_BYTES)
    manager = ModelManager(configs, poll_seconds=args.file_system_poll_wait_seconds,
                           max_batch_size=max_batch_size, tags=tuple(args.saved_model_tags.split(",")),
                           config_file=args.model_config_file,
                           config_file_poll_seconds=args.model_config_file_poll_wait_seconds,
                           warmup=args.enable_model_warmup)
    if args.file_system_poll_wait_seconds >= 0:
        manager.poll()  # TF Serving loads what is there before it opens its ports
    manager.start_polling()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    grpc_server, health_servicer = start_grpc_server(
        manager, f"{args.bind_address}:{args.port}", int(max_message), args.grpc_max_threads,
        channel_arguments)
    print(f"Running gRPC ModelServer at {args.bind_address}:{args.port} ...", flush=True)
    rest_server = None
    if args.rest_api_port:
        rest_server = start_rest_server(manager, args.bind_address, args.rest_api_port,
                                        int(max_message), args.rest_api_num_threads, prometheus_path)
        print(f"Exporting HTTP/REST API at:{args.bind_address}:{args.rest_api_port} ...", flush=True)

    from grpc_health.v1 import health_pb2

    while not stop.wait(0.5):
        serving = health_pb2.HealthCheckResponse.SERVING if manager.any_available() \
            else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", PREDICTION_SERVICE, MODEL_SERVICE):
            health_servicer.set(service, serving)

    print("Shutting down: draining requests", flush=True)
    health_servicer.enter_graceful_shutdown()
    if rest_server is not None:
        rest_server.shutdown()
        rest_server.server_close()
    grpc_server.stop(grace=5).wait(10)
    manager.stop()
    print("Server stopped", flush=True)
    return 0


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP connections on host:port (used by tests and scripts)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False
