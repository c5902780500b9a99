"""Versions of one model: what is on disk under its base path, which versions the version policy
wants, loading them (with warm-up replay) and unloading the ones it no longer wants."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np

from align_tf.errors import ServingError
from align_tf.serving.limits import RequestLimits
from align_tf.serving.tensor_proto import TensorHeader, check_total
from align_tf.serving.server.bundle import SessionBundle
from align_tf.serving.server.model_config import ModelConfig

log = logging.getLogger("align_tf.serving")

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# kPredictMethodName, kClassifyMethodName, kRegressMethodName: what --enable_signature_method_name_check
# lets Predict run.
_METHOD_NAMES = ("tensorflow/serving/predict", "tensorflow/serving/classify", "tensorflow/serving/regress")


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


class LoadedVersion:
    """One loaded SavedModel version: a session bundle (bundle.py), its signature defs as TF
    Serving reads them, and `run`, which is TF Serving's RunPredict over them."""

    def __init__(self, name: str, version: int, path: str, tags: tuple[str, ...] = ("serve",),
                 warmup: bool = True, session_config=None, method_name_check: bool = False,
                 warmup_iterations: int = 1):
        import tensorflow as tf

        self.name, self.version, self.path = name, version, path
        self.method_name_check = method_name_check
        self.bundle = SessionBundle(path, tags, session_config)
        self.signature_defs = self.bundle.signature_defs
        # What the REST codec needs per signature input: its dtype (and declared shape).
        self.input_specs = {
            key: {alias: tf.TensorSpec(None if info.tensor_shape.unknown_rank else
                                       [d.size if d.size >= 0 else None for d in info.tensor_shape.dim],
                                       tf.dtypes.as_dtype(info.dtype) if info.dtype else tf.float32)
                  for alias, info in signature.inputs.items()}
            for key, signature in self.signature_defs.items()}
        self.warmup_requests = self.replay_warmup(warmup_iterations) if warmup else 0

    def replay_warmup(self, iterations: int = 1) -> int:
        """Run `assets.extra/tf_serving_warmup_requests` (Predict, Classify, Regress and
        MultiInference records, each `iterations` times: --num_request_iterations_for_warmup) as
        TF Serving does at load time; a failing record fails the load."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        from align_tf.protocol import WARMUP_FILE

        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.isfile(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            entry = prediction_log_pb2.PredictionLog.FromString(record)
            if entry.WhichOneof("log_type") in ("classify_log", "regress_log", "multi_inference_log"):
                from align_tf.serving.server import inference_apis  # it imports this module

                for _ in range(iterations):
                    inference_apis.replay_warmup_record(self, entry)
                count += 1
                continue
            if entry.WhichOneof("log_type") != "predict_log":
                continue
            request = entry.predict_log.request
            for _ in range(iterations):
                self.run(request.model_spec.signature_name or "serving_default", dict(request.inputs),
                         tuple(request.output_filter))
            count += 1
        return count

    def signature(self, signature_name: str):
        signature = self.signature_defs.get(signature_name)
        if signature is None:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found.')
        return signature

    def run(self, signature_name: str, inputs: dict, output_filter=(),
            limits: RequestLimits = RequestLimits()) -> dict:
        """TF Serving's RunPredict (predict_util.cc): the signature (FAILED_PRECONDITION when
        absent; its method name only with --enable_signature_method_name_check), the number of
        inputs (VerifyRequestInputsSize), each input by alias or the signature's default
        (GetInputValues), the output filter; then one Session::Run, whose graph checks dtypes and
        shapes. Before anything is decoded, each TensorProto's declared size is checked against
        `limits` (batch size, total decoded bytes): the bounds that keep a small message from
        becoming gigabytes. `inputs` values are numpy arrays (REST, warm-up) or TensorProtos (gRPC)."""
        signature = self.signature(signature_name)
        if self.method_name_check and signature.method_name not in _METHOD_NAMES:
            raise ServingError(grpc.StatusCode.INTERNAL, "Expected prediction signature method_name to be one "
                               f"of {{{', '.join(_METHOD_NAMES)}}}. Was: {signature.method_name}")
        expected = set(signature.inputs)
        if len(inputs) > len(expected) or (len(inputs) < len(expected) and not signature.defaults):
            raise invalid(
                f"input size does not match signature: {len(inputs)}!={len(expected)} "
                f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(set(inputs) - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - set(inputs)))}}}.")
        headers = {alias: value if isinstance(value, np.ndarray) else TensorHeader(value, alias, limits)
                   for alias, value in inputs.items()}
        for alias, value in headers.items():
            shape = value.shape
            if limits.max_batch_size and len(shape) and shape[0] > limits.max_batch_size:
                raise invalid(f"{alias}: Task size {shape[0]} is larger than maximum input "
                              f"batch size {limits.max_batch_size}")
        check_total([h for h in headers.values() if isinstance(h, TensorHeader)], limits)
        feeds, seen = [], set()
        for alias in sorted(signature.inputs):  # GetInputValues
            info = signature.inputs[alias]
            if alias in headers:
                value = headers[alias]
                seen.add(alias)
            elif alias in signature.defaults:
                value = TensorHeader(signature.defaults[alias], alias, limits)
            else:
                raise invalid(f"Signature input alias: {alias}(feed name: {info.name}) not found in request "
                              "and no default value provided. Inputs expected to be in the request "
                              f"{{{','.join(sorted(inputs))}}}, or default input alias set: "
                              f"{','.join(sorted(signature.defaults))}")
            feeds.append((info.name, value if isinstance(value, np.ndarray) else value.decode()))
        if inputs and len(seen) != len(inputs):
            raise invalid(f"Inputs contains invalid name. Used request inputs: {','.join(sorted(seen))}, "
                          f"request input: {','.join(sorted(inputs))}")
        names = []
        for alias in output_filter:
            if alias not in signature.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected "
                              f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
            if alias in names:
                raise invalid(f"duplicate output tensor alias: {alias}")
            names.append(alias)
        names = names or sorted(signature.outputs)
        try:
            outputs = self.bundle.run(feeds, [signature.outputs[n].name for n in names])
        except Exception as e:  # tf.errors.OpError, or a feed the C API cannot convert
            raise run_error(e) from None
        return dict(zip(names, outputs))


def run_error(error) -> ServingError:
    """A Session::Run failure as the status TF Serving returns: the OpError's code and words."""
    import tensorflow as tf

    if isinstance(error, tf.errors.OpError):
        return ServingError(_CODE_BY_NUMBER.get(error.error_code, grpc.StatusCode.UNKNOWN), op_error_message(error))
    return invalid(str(error))


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


@dataclass(frozen=True)
class LoadOptions:
    """How versions are loaded (tensorflow_model_server's flags): the meta graph tags, warm-up
    replay, the Session's ConfigProto, --enable_signature_method_name_check, and
    --max_num_load_retries / --load_retry_interval_micros."""

    tags: tuple[str, ...] = ("serve",)
    warmup: bool = True
    session_config: object = None
    method_name_check: bool = False
    max_num_load_retries: int = 0
    load_retry_interval_seconds: float = 0.0
    warmup_iterations: int = 1


_INT64 = (-2 ** 63, 2 ** 63 - 1)
_VERSION_NAME = re.compile(r"\s*[+-]?\d+\s*")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def parse_version_number(name: str) -> int | None:
    """A version folder's name as TF Serving reads it (file_system_storage_path_source.cc,
    ParseVersionNumber: absl::SimpleAtoi into int64): "00000123" is version 123; a name that is
    not a number (or not an int64) is no version and is skipped."""
    if not _VERSION_NAME.fullmatch(name):
        return None
    number = int(name)
    return number if _INT64[0] <= number <= _INT64[1] else None


class ServedModel:
    """A model name: the versions on disk under its base path, loaded per its version policy."""

    def __init__(self, config: ModelConfig, tags: tuple[str, ...] = ("serve",), warmup: bool = True,
                 options: LoadOptions | None = None):
        self.config = config
        self.options = options or LoadOptions(tags=tuple(tags), warmup=warmup)
        self.tags, self.warmup = self.options.tags, self.options.warmup
        self.versions: dict[int, LoadedVersion] = {}
        self.states: dict[int, VersionState] = {}
        self._lock = threading.Lock()
        self._failed: dict[int, float] = {}  # version -> mtime of the attempt that failed
        self.folders: dict[int, str] = {}     # version -> its folder's name ("00000123")

    def versions_on_disk(self) -> list[int]:
        """The versions under the base path (IndexChildrenByVersion): folders whose name parses
        as a number and that hold a SavedModel; of two folders with one number ("7", "007") the
        later name wins, as TF Serving's map does."""
        base = self.config.base_path
        if not os.path.isdir(base):
            return []
        folders = {}
        for name in sorted(os.listdir(base)):
            number = parse_version_number(name)
            if number is not None and any(os.path.isfile(os.path.join(base, name, f)) for f in SAVED_MODEL_FILES):
                folders[number] = name
        self.folders = folders
        return sorted(folders)

    def aspired_versions(self) -> list[int]:
        on_disk = self.versions_on_disk()
        if self.config.policy == "all":
            return on_disk
        if self.config.policy == "specific":
            return [v for v in on_disk if v in self.config.versions]
        return on_disk[-self.config.num_versions:]

    def _load(self, version: int, path: str) -> LoadedVersion:
        """LoadedVersion, retried as TF Serving's loader harness retries a failed load."""
        options = self.options
        for attempt in range(options.max_num_load_retries + 1):
            try:
                return LoadedVersion(self.config.name, version, path, options.tags, options.warmup,
                                     options.session_config, options.method_name_check,
                                     options.warmup_iterations)
            except Exception as e:
                if attempt == options.max_num_load_retries:
                    raise
                log.warning("model %s version %d failed to load (%s); retrying in %g s", self.config.name,
                            version, str(e)[:200], options.load_retry_interval_seconds)
                time.sleep(options.load_retry_interval_seconds)
        raise AssertionError("unreachable")

    def poll(self) -> None:
        """Load aspired versions that are not loaded, unload the others (TF Serving loads the
        new version before it unloads the old one, so requests never see no version)."""
        aspired = self.aspired_versions()
        for version in aspired:
            if version in self.versions:
                continue
            path = os.path.join(self.config.base_path, self.folders[version])
            stamp = max(os.path.getmtime(os.path.join(path, f)) for f in SAVED_MODEL_FILES
                        if os.path.isfile(os.path.join(path, f)))
            if self._failed.get(version) == stamp:
                continue  # failed before and unchanged since
            with self._lock:
                self.states[version] = VersionState("LOADING")
            try:
                loaded = self._load(version, path)
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
