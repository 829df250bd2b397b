"""TF Serving's REST API on the standard library's `ThreadingHTTPServer`.

GET  /v1/models/<name>[/versions/<v>]            model version status
GET  /v1/models/<name>[/versions/<v>]/metadata   SignatureDefs as JSON
POST /v1/models/<name>[/versions/<v>]:predict    row (`instances`) or columnar (`inputs`) format

Errors answer `{"error": "..."}` with the HTTP status TF Serving gives the same
status code; bodies over the size limit get 413 without being read.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from keras_vit.export.errors import ServingError
from keras_vit.export.loaded_version import LoadedVersion, run_signature
from keras_vit.export.predict import format_predict_response, parse_predict_body
from keras_vit.export.repository import ModelRepository

Runner = Callable[[LoadedVersion, str, dict, "float | None"], dict]

log = logging.getLogger("keras_vit.serve")
_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?/?$"
)


def signature_def_map_json(signature_defs: dict[str, Any]) -> dict[str, Any]:
    """A SignatureDefMap as JSON, the way TF Serving prints it (proto3 JSON mapping)."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    proto = get_model_metadata_pb2.SignatureDefMap()
    for key, value in signature_defs.items():
        proto.signature_def[key].CopyFrom(value)
    return json_format.MessageToDict(proto, preserving_proto_field_name=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server_version = "keras-vit-serve"
    timeout = 60  # seconds a silent connection may hold a thread

    repository: ModelRepository
    max_request_bytes: int
    run: Runner  # (loaded, signature, inputs, timeout seconds) -> outputs
    timeout_seconds: float | None

    def log_message(self, format: str, *args) -> None:  # route access logs to logging, not stderr
        log.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, payload: dict[str, Any], close: bool = False) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _error(self, error: ServingError, close: bool = False) -> None:
        self._send(error.http_status, {"error": error.message}, close=close)

    def _route(self):
        match = _PATH.match(self.path.split("?")[0])
        if not match:
            raise ServingError("NOT_FOUND", f"Malformed request: {self.command} {self.path}")
        version = int(match["version"]) if match["version"] else None
        return match["name"], version, bool(match["metadata"]), match["verb"]

    def handle_expect_100(self) -> bool:
        """curl sends `Expect: 100-continue` for large bodies: refuse oversized ones before they are sent."""
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_request_bytes:
            self._too_large(int(length))
            return False
        return super().handle_expect_100()

    def _too_large(self, length: int) -> None:
        self._send(
            413,
            {
                "error": f"Request body of {length} bytes exceeds the limit of "
                f"{self.max_request_bytes} bytes (--max_request_bytes)."
            },
            close=True,
        )

    def do_GET(self) -> None:
        try:
            name, version, metadata, verb = self._route()
            if verb:
                raise ServingError("NOT_FOUND", f"Malformed request: GET {self.path} (use POST for :{verb})")
            if metadata:
                loaded = self.repository.get(name, version)
                self._send(
                    200,
                    {
                        "model_spec": {"name": name, "signature_name": "", "version": str(loaded.version)},
                        "metadata": {"signature_def": signature_def_map_json(loaded.signature_defs)},
                    },
                )
            else:
                self._send(200, {"model_version_status": self.repository.status(name, version)})
        except ServingError as error:
            self._error(error)

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._send(411, {"error": "POST requests need a Content-Length header."}, close=True)
            return
        if int(length) > self.max_request_bytes:
            self._too_large(int(length))
            return
        body = self.rfile.read(int(length))
        try:
            name, version, metadata, verb = self._route()
            if metadata or verb is None:
                raise ServingError("NOT_FOUND", f"Malformed request: POST {self.path}")
            if verb != "predict":
                raise ServingError("UNIMPLEMENTED", f"Only :predict is served here; received :{verb}.")
            loaded = self.repository.get(name, version)
            signature, inputs, style = parse_predict_body(body, loaded)
            outputs = self.run(loaded, signature, inputs, self.timeout_seconds)
            self._send(200, format_predict_response(outputs, style))
        except ServingError as error:
            self._error(error)
        except Exception as error:  # an unexpected failure answers 500 and the server goes on
            log.exception("Predict failed")
            self._error(ServingError("INTERNAL", f"{type(error).__name__}: {error}"))


def _run_now(loaded: LoadedVersion, signature: str, inputs: dict, timeout: float | None) -> dict:
    return run_signature(loaded, signature, inputs)


def make_rest_server(
    repository: ModelRepository,
    host: str,
    port: int,
    max_request_bytes: int,
    run: Runner = _run_now,
    timeout_seconds: float | None = None,
) -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server answering TF Serving's REST API from `repository`.

    `run` answers each predict call; requests taking longer than `timeout_seconds`
    (TF Serving's `--rest_api_timeout_in_ms`) get DEADLINE_EXCEEDED (HTTP 504).
    """
    attributes = {
        "repository": repository,
        "max_request_bytes": max_request_bytes,
        "run": staticmethod(run),
        "timeout_seconds": timeout_seconds,
    }
    handler = type("RestHandler", (_Handler,), attributes)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
