"""The REST side: TF Serving's routes (model_servers/http_rest_api_util.cc) over a ModelManager,
in a threading HTTP server with a bound on concurrent requests and on body size."""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

from align_tf.errors import ServingError
from align_tf.serving.json_tensor import outputs_to_json, parse_predict_body
from align_tf.serving.server import replies
from align_tf.serving.server.manager import ModelManager
from align_tf.serving.server.versions import invalid
from align_tf.serving.status_codes import HTTP_STATUS

log = logging.getLogger("align_tf.serving")

_PREDICT_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(predict|classify|regress)")
_STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?")


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
        name, version, label, metadata = match.groups()
        version = int(version) if version else None
        with self.server.slots:
            try:
                manager = self.server.manager
                reply = replies.model_metadata_reply(manager, name, version, label) if metadata \
                    else replies.model_status_reply(manager, name, version, label)
                self._reply(200, replies.reply_to_json(reply))
            except ServingError as e:
                self._error(e)

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
            raise invalid(f"JSON Parse error: {e}") from None
        signature_name = (request.get("signature_name") if isinstance(request, dict) else None) \
            or "serving_default"
        manager = self.server.manager
        served = manager.model(name).get(version, label)
        specs = served.input_specs.get(signature_name)
        if specs is None:  # TF Serving's REST handler says INVALID_ARGUMENT here
            raise invalid(f'Serving signature name: "{signature_name}" not found in signature def')
        arrays, fmt = parse_predict_body(request, specs)
        _, _, outputs = manager.predict(name, served.version, None, signature_name, arrays)
        return outputs_to_json(outputs, fmt)


def start_rest_server(manager: ModelManager, host: str, port: int, max_body_bytes: int,
                      num_threads: int, prometheus_path: str | None = None) -> RestServer:
    server = RestServer((host, port), manager, max_body_bytes, num_threads, prometheus_path)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                     name="rest", daemon=True).start()
    return server
