"""`ModelServer`: the REST and gRPC front ends over one `ModelRepository`.

A local, TF-Serving-compatible server for development and tests; production
runs the real `tensorflow/serving` image on the same folders (see README).
"""

from __future__ import annotations

import logging
import threading

from keras_vit.export.repository import ModelRepository

log = logging.getLogger("keras_vit.serve")
DEFAULT_MAX_REQUEST_BYTES = 32 << 20
LOOPBACK = "127.0.0.1"


class ModelServer:
    """Serves models over TF Serving's REST and gRPC APIs.

    Args:
        models: model name -> base folder of numbered SavedModel versions.
        host: address to bind. Defaults to 127.0.0.1 (this machine only).
        rest_port: REST port; 0 picks a free one, None disables REST. Defaults to 8501.
        grpc_port: gRPC port; 0 picks a free one, None disables gRPC. Defaults to 8500.
        max_request_bytes: largest request body accepted (REST 413, gRPC RESOURCE_EXHAUSTED).
        poll_seconds: seconds between scans for new versions; 0 disables.
        grpc_workers: threads answering gRPC calls.

    Example:
        >>> with ModelServer({"vit": "saved_models/vit"}, rest_port=0, grpc_port=0) as server:
        ...     print(server.rest_port, server.grpc_port)
    """

    def __init__(
        self,
        models: dict[str, str],
        *,
        host: str = LOOPBACK,
        rest_port: int | None = 8501,
        grpc_port: int | None = 8500,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        poll_seconds: float = 1.0,
        grpc_workers: int = 8,
    ):
        if rest_port is None and grpc_port is None:
            raise ValueError("Enable REST, gRPC or both. Received: rest_port=None, grpc_port=None")
        for label, port in (("rest_port", rest_port), ("grpc_port", grpc_port)):
            if port is not None and not (isinstance(port, int) and 0 <= port < 65536):
                raise ValueError(
                    f"`{label}` must be an int in [0, 65535] (0 picks a free port). Received: {label}={port!r}"
                )
        if not isinstance(max_request_bytes, int) or max_request_bytes < 1024:
            raise ValueError(
                f"`max_request_bytes` must be an int >= 1024. Received: max_request_bytes={max_request_bytes!r}"
            )
        self.repository = ModelRepository(models, poll_seconds=poll_seconds)
        self.host = host
        self._requested = (rest_port, grpc_port)
        self.max_request_bytes = max_request_bytes
        self.grpc_workers = grpc_workers
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self._http = None
        self._http_thread: threading.Thread | None = None
        self._grpc = None

    def start(self) -> ModelServer:
        """Loads the models and starts answering; returns at once (threads serve)."""
        if self.host not in (LOOPBACK, "localhost", "::1"):
            log.warning(
                "Binding %s: the server has no authentication; anyone who can reach this address can call it.",
                self.host,
            )
        self.repository.start()
        rest_port, grpc_port = self._requested
        try:
            if rest_port is not None:
                from keras_vit.export.rest import make_rest_server

                self._http = make_rest_server(self.repository, self.host, rest_port, self.max_request_bytes)
                self.rest_port = self._http.server_address[1]
                self._http_thread = threading.Thread(
                    target=self._http.serve_forever, kwargs={"poll_interval": 0.2}, name="keras-vit-rest", daemon=True
                )
                self._http_thread.start()
            if grpc_port is not None:
                from keras_vit.export.grpc_service import make_grpc_server

                self._grpc, self.grpc_port = make_grpc_server(
                    self.repository, self.host, grpc_port, self.max_request_bytes, self.grpc_workers
                )
                self._grpc.start()
        except Exception:
            self.stop()
            raise
        log.info("keras-vit serve: REST on %s:%s, gRPC on %s:%s", self.host, self.rest_port, self.host, self.grpc_port)
        return self

    def stop(self) -> None:
        """Stops both front ends and the version poller."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait(5)
            self._grpc = None
        self.repository.stop()

    def wait(self) -> None:
        """Blocks until interrupted (Ctrl-C), then stops."""
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
