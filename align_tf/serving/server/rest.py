"""The REST side: TF Serving's routes over a ModelManager, answered as its HttpRestApiHandler
does (model_servers/http_rest_api_handler.cc, http_rest_api_util.cc, http_server.cc): every
path under /v1/ is the handler's, and anything it cannot parse is 400 "Malformed request"; paths
elsewhere are 404; every answer, errors included, is a JSON object. Bodies are bounded in size
(413), connections in time (`timeout`), concurrent requests in number (`num_threads`)."""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


from align_tf.errors import ServingError
from align_tf.serving.example_json import classification_json, regression_json, request_from_json
from align_tf.serving.json_tensor import outputs_to_json, parse_json_body, parse_predict_body, signature_name_of
from align_tf.serving.server import replies
from align_tf.serving.server.manager import ModelManager
from align_tf.serving.server.versions import invalid
from align_tf.serving.status_codes import HTTP_STATUS

log = logging.getLogger("align_tf.serving")

# kPredictionApiGegex and kModelStatusApiRegex of http_rest_api_util.cc; kHTTPRestApiHandlerPathRegex.
_PREDICT_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
_STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")
_HANDLER_PATH = re.compile(r"(?i)/v1/.*")
_INT64_MAX = 2 ** 63 - 1


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, manager: ModelManager, max_body_bytes: int, num_threads: int,
                 prometheus_path: str | None, timeout: float = 30.0, cors: bool = False):
        super().__init__(address, RestHandler)
        self.cors = cors
        self.manager = manager
        self.max_body_bytes = max_body_bytes
        self.slots = threading.BoundedSemaphore(num_threads)
        self.prometheus_path = prometheus_path
        self.request_timeout = timeout


def _version(text: str | None) -> int | None:
    """ParseModelInfo's SimpleAtoi: a version that does not fit int64 is a 400, not a 404."""
    if not text:
        return None
    if len(text) > 19 or int(text) > _INT64_MAX:
        raise invalid(f"Failed to convert version: {text[:40]}{'...' if len(text) > 40 else ''} to numeric.")
    return int(text)


def parse_model_info(http_method: str, path: str) -> tuple | None:
    """ParseModelInfo (http_rest_api_util.cc): (model name, version, label, method or
    subresource) from a POST path (kPredictionApiGegex) or a GET path (kModelStatusApiRegex),
    the name and label URL-decoded; None when the path is not one of those (parse_successful is
    false), INVALID_ARGUMENT when a version does not fit an int64 or a name does not decode."""
    pattern = {"POST": _PREDICT_PATH, "GET": _STATUS_PATH}.get(http_method)
    match = pattern.fullmatch(path) if pattern is not None else None
    if not match:
        return None
    name, version, label, last = match.groups()
    return _decoded(name, "model name"), _version(version), _decoded(label, "model version label"), last


def _decoded(text: str | None, what: str) -> str | None:
    """DecodeArg: model names and labels are URL-decoded (curl_easy_unescape)."""
    if text is None:
        return None
    value = urllib.parse.unquote_to_bytes(text)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(f"Failed to decode {what}:{text}") from None


class RestHandler(BaseHTTPRequestHandler):
    server: RestServer
    protocol_version = "HTTP/1.1"
    error_content_type = "application/json"
    error_message_format = '{"error": "%(message)s"}'

    def setup(self):
        self.timeout = self.server.request_timeout  # a slow client does not hold a thread for ever
        super().setup()

    def log_message(self, fmt, *args):  # quiet: one line per request would drown the test logs
        log.debug("%s " + fmt, self.address_string(), *args)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, unknown method, huge headers) as JSON."""
        self.close_connection = True
        try:
            self._reply(code, {"error": message or self.responses.get(code, ("",))[0]})
        except OSError:
            pass

    def _reply(self, status: int, payload, content_type="application/json"):
        if isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):  # a model's string bytes that are not UTF-8 pass as they are
            data = payload.encode("utf-8", "surrogateescape")
        else:
            data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.server.cors:  # AddCORSHeaders (http_rest_api_util.cc)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "POST, GET")
            self.send_header("Access-Control-Allow-Headers", "Content-Type")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        """The request body, bounded by `max_body_bytes` before reading it."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        text = (self.headers.get("Content-Length") or "0").strip()
        if not text.isdigit():
            self.close_connection = True
            raise _HttpError(400, f"Content-Length: {text[:40]!r} is not a number of bytes")
        length = int(text)
        if length > self.server.max_body_bytes:
            self.close_connection = True
            raise _HttpError(413, f"Request body of {length} bytes is larger than the limit of "
                                  f"{self.server.max_body_bytes} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise _HttpError(400, f"Request body ended after {len(body)} of {length} bytes")
        return body

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                self.close_connection = True
                raise _HttpError(400, "malformed chunked body") from None
            total += size
            if total > self.server.max_body_bytes:
                self.close_connection = True
                raise _HttpError(413, f"Request body larger than the limit of {self.server.max_body_bytes} bytes")
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _handle(self):
        path = urllib.parse.urlsplit(self.path).path
        try:
            body = self._read_body()
            if self.server.prometheus_path and path == self.server.prometheus_path and self.command == "GET":
                return self._reply(200, self.server.manager.prometheus_text().encode(), "text/plain")
            if not _HANDLER_PATH.fullmatch(path):
                return self._reply(404, {"error": f"Not found: {self.command} {path}"})
            if self.command == "OPTIONS":  # a CORS preflight (http_server.cc): no handler, no body
                origin = self.headers.get("Origin") or ""
                return self._reply(200 if re.search(r"https?://", origin) else 400, b"")
            with self.server.slots:
                self._reply(200, self._dispatch(self.command, path, body))
        except _HttpError as e:
            self._reply(e.status, {"error": e.message})
        except ServingError as e:
            self._reply(HTTP_STATUS.get(e.code, 500), {"error": e.message})
        except TimeoutError:  # the client stopped sending: answer if it still listens, then close
            self.close_connection = True
            try:
                self._reply(408, {"error": f"no data from the client for {self.server.request_timeout} s"})
            except OSError:
                pass
        except ConnectionError:
            self.close_connection = True
        except Exception as e:  # a bug must still answer, and must not end the server
            log.exception("REST %s %s failed", self.command, path)
            self._reply(500, {"error": f"Internal error: {type(e).__name__}: {e}"[:500]})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def _dispatch(self, method: str, path: str, body: bytes):
        """HttpRestApiHandler::ProcessRequest: anything its paths do not take is "Malformed request"."""
        info = parse_model_info(method, path)
        if info is not None and method == "POST" and info[3] in ("predict", "classify", "regress"):
            name, version, label, verb = info
            request = parse_json_body(body)
            signature_name = signature_name_of(request)
            if verb != "predict":
                return self._classify_or_regress(verb, name, version, label, signature_name, request)
            return self._predict(name, version, label, signature_name, request, body)
        if info is not None and method == "GET":
            name, version, label, subresource = info
            if not name:  # ProcessModelStatusRequest / ProcessModelMetadataRequest
                raise invalid("Missing model name in request.")
            manager = self.server.manager
            reply = replies.model_metadata_reply(manager, name, version, label) if subresource == "metadata" \
                else replies.model_status_reply(manager, name, version)  # labels ignored: TF Serving does
            return replies.reply_to_json(reply)
        raise invalid(f"Malformed request: {method} {path}")

    def _predict(self, name, version, label, signature_name, request: dict, body: bytes) -> str:
        manager = self.server.manager
        served = manager.model(name).get(version, label)
        signature_name = signature_name or "serving_default"
        specs = served.input_specs.get(signature_name)
        if specs is None:  # GetInfoMap in http_rest_api_handler.cc: INVALID_ARGUMENT here
            raise invalid(f'Serving signature name: "{signature_name}" not found in signature def')
        arrays, fmt = parse_predict_body(request, specs, manager.limits,
                                         may_hold_bools=b"true" in body or b"false" in body,
                                         signature_name=signature_name)
        _, _, outputs = manager.predict(name, served.version, None, signature_name, arrays)
        return outputs_to_json(outputs, fmt)

    def _classify_or_regress(self, kind, name, version, label, signature_name, request: dict) -> bytes:
        """ProcessClassifyRequest / ProcessRegressRequest: the examples JSON as an `Input`, run as
        the gRPC API runs it, answered as MakeJsonFromClassificationResult /
        MakeJsonFromRegressionResult write it."""
        signature_name, request_input = request_from_json(request)
        manager = self.server.manager
        if kind == "classify":
            _, result = manager.classify(name, version, label, signature_name, request_input)
            return classification_json(result.labels, result.scores)
        _, values = manager.regress(name, version, label, signature_name, request_input)
        return regression_json(values)


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def start_rest_server(manager: ModelManager, host: str, port: int, max_body_bytes: int,
                      num_threads: int, prometheus_path: str | None = None,
                      timeout: float = 30.0, cors: bool = False) -> RestServer:
    server = RestServer((host, port), manager, max_body_bytes, num_threads, prometheus_path, timeout, cors)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                     name="rest", daemon=True).start()
    return server
