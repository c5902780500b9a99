"""All served models: the model list (and its reloads), the polling threads, and one entry point
per request kind that both protocols call, so gRPC and REST check, count and answer alike."""

from __future__ import annotations

import logging
import threading

import grpc

from align_tf.errors import ServingError
from align_tf.serving.limits import DEFAULT_MAX_BATCH_SIZE, RequestLimits
from align_tf.serving.server.model_config import ModelConfig, read_model_config_file
from align_tf.serving.server import inference_apis
from align_tf.serving.server.inference_apis import DEFAULT_SIGNATURE
from align_tf.serving.server.versions import LoadOptions, ServedModel, invalid

log = logging.getLogger("align_tf.serving")


class ModelManager:
    """All served models, a polling thread, and the request-level checks."""

    def __init__(self, configs: list[ModelConfig], poll_seconds: float = 1.0,
                 max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE, tags=("serve",),
                 config_file: str | None = None, config_file_poll_seconds: float = 0,
                 warmup: bool = True, limits: RequestLimits | None = None,
                 load_options: LoadOptions | None = None):
        """`limits` bound every request; without it, the defaults with `max_batch_size`.
        `load_options` (how versions load) override `tags` and `warmup` when given."""
        self.load_options = load_options or LoadOptions(tags=tuple(tags), warmup=warmup)
        self.warmup = self.load_options.warmup
        self.limits = limits or RequestLimits(max_batch_size=max_batch_size)
        self.models = {c.name: ServedModel(c, options=self.load_options) for c in configs}
        self.poll_seconds = poll_seconds
        self.tags = self.load_options.tags
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
                    else ServedModel(c, options=self.load_options)
            self.models = updated
        self.poll()

    def model(self, name: str) -> ServedModel:
        if not name:  # server_core.cc, ServableRequestFromModelSpec
            raise invalid("ModelSpec has no name specified.")
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
                signature_name, inputs, output_filter, self.limits)
        except ServingError as e:
            status = e.code.name
            raise
        finally:
            with self._counter_lock:
                key = (name, signature_name, status)
                self.counters[key] = self.counters.get(key, 0) + 1

    def _counted(self, name: str, signature_name: str, run):
        status = "OK"
        try:
            return run()
        except ServingError as e:
            status = e.code.name
            raise
        finally:
            with self._counter_lock:
                key = (name, signature_name or DEFAULT_SIGNATURE, status)
                self.counters[key] = self.counters.get(key, 0) + 1

    def classify(self, name: str, version: int | None, label: str | None, signature_name: str,
                 request_input) -> tuple[int, inference_apis.Classification]:
        """Classify (classification_service.cc): (served version, result columns)."""
        def run():
            served = self.model(name).get(version, label)
            return served.version, inference_apis.classify(served, signature_name, request_input, self.limits)
        return self._counted(name, signature_name, run)

    def regress(self, name: str, version: int | None, label: str | None, signature_name: str,
                request_input):
        """Regress (regression_service.cc): (served version, float32 [N])."""
        def run():
            served = self.model(name).get(version, label)
            return served.version, inference_apis.regress(served, signature_name, request_input, self.limits)
        return self._counted(name, signature_name, run)

    def multi_inference(self, request, version: int | None, label: str | None):
        """MultiInference (multi_inference_helper.cc): the version the first task's ModelSpec
        names serves every task."""
        name = request.tasks[0].model_spec.name if request.tasks else ""
        served = self.model(name).get(version, label)
        return inference_apis.multi_inference(served, request, self.limits)

    def prometheus_text(self) -> str:
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._counter_lock:
            for (name, signature, status), count in sorted(self.counters.items()):
                lines.append(f':tensorflow:serving:request_count{{model_name="{name}",'
                             f'signature_name="{signature}",status="{status}"}} {count}')
        return "\n".join(lines) + "\n"
