"""Versions of one model: what is on disk under its base path, which versions the version policy
wants, loading them (with warm-up replay) and unloading the ones it no longer wants."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import grpc
import numpy as np

from align_tf.errors import ServingError
from align_tf.serving.limits import RequestLimits
from align_tf.serving.tensor_proto import TensorHeader, check_total
from align_tf.serving.server.model_config import ModelConfig

log = logging.getLogger("align_tf.serving")

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


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
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"{path}: no meta graph with tags {list(tags)}")
        self.signature_defs = meta_graphs[0].signature_def
        self.loaded = tf.saved_model.load(path, tags=list(tags))
        self.functions = dict(self.loaded.signatures)
        self.input_specs = {name: fn.structured_input_signature[1] for name, fn in self.functions.items()}
        self.warmup_requests = self.replay_warmup() if warmup else 0

    def replay_warmup(self) -> int:
        """Run `assets.extra/tf_serving_warmup_requests` (Predict, Classify, Regress and
        MultiInference records) as TF Serving does at load time; a failing record fails the load."""
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

                count += inference_apis.replay_warmup_record(self, entry)
                continue
            if entry.WhichOneof("log_type") != "predict_log":
                continue
            request = entry.predict_log.request
            self.run(request.model_spec.signature_name or "serving_default", dict(request.inputs))
            count += 1
        return count

    def signature(self, signature_name: str):
        signature = self.signature_defs.get(signature_name)
        if signature is None or signature_name not in self.functions:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found.')
        return signature

    def run(self, signature_name: str, inputs: dict, output_filter=(),
            limits: RequestLimits = RequestLimits()) -> dict:
        """Check a request as TF Serving's predict_util.cc does (signature, input names, output
        filter), then each input's dtype, shape and batch size and the decoded size of all of
        them, all before decoding; then run the signature. `inputs` values are numpy arrays
        (REST, warm-up) or TensorProtos (gRPC), decoded here once they passed."""
        import tensorflow as tf

        signature = self.signature(signature_name)
        expected = set(signature.inputs)
        if set(inputs) != expected:
            raise invalid(
                f"input size does not match signature: {len(inputs)}!={len(expected)} "
                f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(set(inputs) - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - set(inputs)))}}}.")
        seen = set()
        for alias in output_filter:
            if alias not in signature.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected "
                              f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
            if alias in seen:
                raise invalid(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        specs = self.input_specs[signature_name]
        headers = {alias: value if isinstance(value, np.ndarray) else TensorHeader(value, alias, limits)
                   for alias, value in inputs.items()}
        for alias, value in headers.items():
            spec = specs[alias]
            shape = value.shape
            if not tf.TensorShape(shape).is_compatible_with(spec.shape):
                raise invalid(f"{alias}: shape {list(shape)} is not compatible with the "
                              f"signature's {spec.shape.as_list()}")
            if limits.max_batch_size and len(shape) and shape[0] > limits.max_batch_size:
                raise invalid(f"{alias}: Task size {shape[0]} is larger than maximum input "
                              f"batch size {limits.max_batch_size}")
            given = value.dtype_name if isinstance(value, TensorHeader) else \
                "string" if value.dtype == object or value.dtype.kind == "S" else value.dtype.name
            if given != spec.dtype.name:
                raise invalid(f"{alias}: expects {spec.dtype.name} but {given} is provided")
        check_total([h for h in headers.values() if isinstance(h, TensorHeader)], limits)
        tensors = {alias: tf.constant(value if isinstance(value, np.ndarray) else value.decode(),
                                      dtype=specs[alias].dtype)
                   for alias, value in headers.items()}
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
