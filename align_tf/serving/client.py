"""AlignServingClient: an exported ALIGN model's signatures over TF Serving's gRPC or REST API.

Works unchanged against real `tensorflow_model_server` and against `align-tf serve`. Inputs are
Python lists / numpy arrays, results are numpy arrays; a failed request raises `ServingError`
with the server's status code and message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import numpy as np

from align_tf.errors import ConfigError, InputError, ServingError  # noqa: F401  (public here too)
from align_tf.protocol import encode_images  # noqa: F401  (public here too)
from align_tf.serving.json_tensor import predict_request_json, reply_to_arrays
from align_tf.serving.limits import RequestLimits
from align_tf.serving.status_codes import CODE_BY_HTTP
from align_tf.serving.tensor_proto import decode_tensors

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

def _string_array(texts) -> np.ndarray:
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, (str, bytes)):
            raise InputError(f"text {i} of {len(texts)}: expected a string, got {type(t).__name__}")
    array = np.empty(len(texts), dtype=object)
    array[:] = [t.encode("utf-8") if isinstance(t, str) else t for t in texts]
    return array


class AlignServingClient:
    """Client for an ALIGN SavedModel served by TF Serving (or `align-tf serve`).

    `target` is "host:port" (gRPC, port 8500 by convention) or "http://host:port" (REST, 8501).
    `version=None` asks for the newest version the server has; `timeout` is per request in
    seconds; requests answered UNAVAILABLE are retried `retries` times with exponential backoff.
    """

    def __init__(self, target: str, model_name: str = "align", version: int | None = None,
                 protocol: str = "grpc", timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.5, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 version_label: str | None = None):
        if protocol not in ("grpc", "rest"):
            raise ConfigError(f"protocol must be 'grpc' or 'rest', got {protocol!r}")
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self.protocol = protocol
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_message_bytes = max_message_bytes
        # The bounds the server holds requests to, held here to what users pass and what
        # replies carry: no rank past 32, nothing decoded past the message size.
        self.limits = RequestLimits(max_message_bytes=max_message_bytes,
                                    max_decoded_bytes=max_message_bytes, max_batch_size=None)
        self._signatures = None
        self.served_version: int | None = None  # from the last gRPC Predict response
        if protocol == "grpc":
            target = target.split("://", 1)[-1]
            self.target = target
            self._channel = grpc.insecure_channel(target, options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ])
            from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

            self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        else:
            self.target = target if "://" in target else f"http://{target}"
            self._channel = None

    # -- the signatures ---------------------------------------------------------------------
    def embed_text(self, texts) -> np.ndarray:
        """L2-normalised text embeddings [M, D]."""
        return self.predict("embed_text", {"text": _string_array(texts)}, ["text_embeds"])["text_embeds"]

    def embed_image(self, images) -> np.ndarray:
        """L2-normalised image embeddings [N, D] for encoded images (bytes or paths)."""
        data = _string_array(encode_images(images))
        return self.predict("embed_image", {"image_bytes": data}, ["image_embeds"])["image_embeds"]

    def embed_pixels(self, pixel_values) -> np.ndarray:
        pixel_values = np.asarray(pixel_values, dtype=np.float32)
        return self.predict("embed_pixels", {"pixel_values": pixel_values}, ["image_embeds"])["image_embeds"]

    def embed_tokens(self, input_ids, attention_mask, token_type_ids=None) -> np.ndarray:
        input_ids = np.asarray(input_ids, dtype=np.int32)
        inputs = {"input_ids": input_ids, "attention_mask": np.asarray(attention_mask, dtype=np.int32),
                  "token_type_ids": np.zeros_like(input_ids) if token_type_ids is None
                  else np.asarray(token_type_ids, dtype=np.int32)}
        return self.predict("embed_tokens", inputs, ["text_embeds"])["text_embeds"]

    def classify(self, images, labels) -> dict[str, np.ndarray]:
        """Zero-shot scores of each image against each label: `logits_per_image` and `probs` [N, M]."""
        inputs = {"image_bytes": _string_array(encode_images(images)), "text": _string_array(labels)}
        return self.predict("classify", inputs, ["logits_per_image", "probs"])

    def similarity(self, image_embeds, text_embeds) -> np.ndarray:
        """`logits_per_image` [N, M] from embeddings (cosine similarity / temperature)."""
        inputs = {"image_embeds": np.asarray(image_embeds, np.float32),
                  "text_embeds": np.asarray(text_embeds, np.float32)}
        return self.predict("similarity", inputs, ["logits_per_image"])["logits_per_image"]

    # -- generic ----------------------------------------------------------------------------
    def predict(self, signature_name: str, inputs: dict, output_names=None) -> dict[str, np.ndarray]:
        """Run any signature: `inputs` maps input names to arrays (string inputs: object arrays
        of bytes). Returns every output as a numpy array."""
        inputs = {k: (v if isinstance(v, np.ndarray) else np.asarray(v)) for k, v in inputs.items()}
        self._check_inputs(inputs)
        if self.protocol == "grpc":
            return self._with_retries(lambda: self._grpc_predict(signature_name, inputs))
        return self._with_retries(lambda: self._rest_predict(signature_name, inputs, output_names))

    def _check_inputs(self, inputs: dict) -> None:
        """Refuse, before encoding anything, inputs the server would refuse for their size."""
        total = 0
        for name, array in inputs.items():
            if array.ndim > self.limits.max_rank:
                raise InputError(f"input {name!r}: {array.ndim} dimensions; at most {self.limits.max_rank}")
            if array.dtype == object:
                total += sum(len(v) if isinstance(v, (bytes, str)) else 0 for v in array.flat)
            else:
                total += array.nbytes
        if total > self.max_message_bytes:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"the inputs hold {total} bytes, more than max_message_bytes "
                               f"{self.max_message_bytes}")

    def metadata(self) -> dict[str, dict]:
        """signature name -> {"inputs"/"outputs": {name: {"dtype", "shape"}}, "method_name"}.
        Unknown dimensions are -1; an unknown rank is None."""
        if self.protocol == "grpc":
            signature_map = self._with_retries(self._grpc_metadata)
        else:
            signature_map = self._with_retries(self._rest_metadata)
        import tensorflow as tf

        def tensors(infos):
            return {alias: {"dtype": tf.dtypes.as_dtype(info.dtype).name,
                            "shape": None if info.tensor_shape.unknown_rank
                            else [int(d.size) for d in info.tensor_shape.dim]}
                    for alias, info in infos.items()}

        out = {name: {"inputs": tensors(s.inputs), "outputs": tensors(s.outputs),
                      "method_name": s.method_name}
               for name, s in signature_map.signature_def.items()
               if not name.startswith("__")}  # __saved_model_init_op is not callable
        self._signatures = out
        return out

    def status(self) -> list[dict]:
        """[{"version": int, "state": "AVAILABLE" | "LOADING" | "END" ..., "error_code",
        "error_message"}] for the model (or the client's version)."""
        if self.protocol == "grpc":
            return self._with_retries(self._grpc_status)
        return self._with_retries(self._rest_status)

    def wait_until_available(self, timeout: float = 60.0, poll: float = 0.5) -> list[dict]:
        """Poll `status()` until a version is AVAILABLE; raise TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                states = self.status()
                if any(s["state"] == "AVAILABLE" for s in states):
                    return states
                last = states
            except ServingError as e:
                if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    raise
                last = e
            time.sleep(poll)
        raise TimeoutError(f"{self.target}: model {self.model_name!r} not AVAILABLE after {timeout}s "
                           f"(last answer: {last})")

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- retries ----------------------------------------------------------------------------
    def _with_retries(self, call):
        for attempt in range(self.retries + 1):
            try:
                return call()
            except ServingError as e:
                if e.code != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                time.sleep(min(self.backoff * 2 ** attempt, 10.0))

    # -- gRPC -------------------------------------------------------------------------------
    def _spec(self, spec, signature_name: str | None = None):
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label:
            spec.version_label = self.version_label
        if signature_name:
            spec.signature_name = signature_name

    def _grpc_call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingError(e.code(), e.details() or "") from None

    def _grpc_predict(self, signature_name, inputs):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature_name)
        for name, array in inputs.items():
            dtype = tf.string if array.dtype == object or array.dtype.kind == "S" else None
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array, dtype=dtype, shape=array.shape))
        response = self._grpc_call(self._predict_stub.Predict, request)
        self.served_version = response.model_spec.version.value
        return decode_tensors(dict(response.outputs), self.limits, "reply")

    def _grpc_metadata(self):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._grpc_call(self._predict_stub.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return signature_map

    def _grpc_status(self):
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._grpc_call(self._model_stub.GetModelStatus, request)
        return [{"version": s.version,
                 "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                 "error_code": s.status.error_code, "error_message": s.status.error_message}
                for s in response.model_version_status]

    # -- REST -------------------------------------------------------------------------------
    def _model_url(self) -> str:
        url = f"{self.target}/v1/models/{self.model_name}"
        if self.version is not None:
            url += f"/versions/{self.version}"
        elif self.version_label:
            url += f"/labels/{self.version_label}"
        return url

    def _http(self, url: str, body: str | None = None) -> dict:
        data = None if body is None else body.encode("utf-8")
        if data is not None and len(data) > self.max_message_bytes:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"request of {len(data)} bytes is larger than max_message_bytes "
                               f"{self.max_message_bytes}")
        request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read(self.max_message_bytes + 1)
                if len(data) > self.max_message_bytes:
                    raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       f"{url}: reply larger than max_message_bytes {self.max_message_bytes}")
                try:  # string outputs are the model's bytes, UTF-8 or not (TF Serving writes them raw)
                    return json.loads(data.decode("utf-8", "surrogateescape"))
                except (ValueError, RecursionError) as e:
                    raise ServingError(grpc.StatusCode.INTERNAL, f"{url}: reply is not JSON: {e}") from None
        except urllib.error.HTTPError as e:
            text = e.read(self.max_message_bytes).decode("utf-8", "replace")
            try:
                message = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                message = text
            raise ServingError(CODE_BY_HTTP.get(e.code, grpc.StatusCode.UNKNOWN), message, e.code) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            code = grpc.StatusCode.DEADLINE_EXCEEDED if "timed out" in str(reason) \
                else grpc.StatusCode.UNAVAILABLE
            raise ServingError(code, f"{url}: {reason}") from None

    def _rest_predict(self, signature_name, inputs, output_names):
        answer = self._http(f"{self._model_url()}:predict", predict_request_json(signature_name, inputs))
        outputs = answer["outputs"]
        if not isinstance(outputs, dict):  # a single output comes without its name
            if not output_names:
                signature = (self._signatures or self.metadata())[signature_name]
                output_names = list(signature["outputs"])
            outputs = {output_names[0]: outputs}
        return {name: reply_to_arrays(value, name, self.limits) for name, value in outputs.items()}

    def _rest_metadata(self):
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        answer = self._http(f"{self._model_url()}/metadata")
        signature_json = dict(answer["metadata"]["signature_def"])
        signature_json.pop("@type", None)
        return json_format.ParseDict(signature_json, get_model_metadata_pb2.SignatureDefMap(),
                                     ignore_unknown_fields=True)

    def _rest_status(self):
        answer = self._http(self._model_url())
        return [{"version": int(s["version"]), "state": s["state"],
                 "error_code": s.get("status", {}).get("error_code", "OK"),
                 "error_message": s.get("status", {}).get("error_message", "")}
                for s in answer.get("model_version_status", [])]

