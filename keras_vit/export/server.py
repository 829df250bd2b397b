"""`ModelServer`: the REST and gRPC front ends over one `ModelRepository`.

A local, TF-Serving-compatible server for development and tests; production
runs the real `tensorflow/serving` image on the same folders (see README).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from keras_vit.export.batching import BatchingParameters
from keras_vit.export.errors import ServingError
from keras_vit.export.loaded_version import LoadedVersion
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
        grpc_workers: threads answering gRPC calls (TF Serving's `--grpc_max_threads`).
        batching: batch concurrent predict calls with these parameters (`--enable_batching`);
            None runs each request on its own.
        rest_timeout_seconds: REST requests running longer answer DEADLINE_EXCEEDED (HTTP 504),
            TF Serving's `--rest_api_timeout_in_ms`; None waits without limit.
        config_file: the models.config `models` came from; re-read every `config_poll_seconds`
            (`--model_config_file_poll_wait_seconds`; 0 reads it once) and its changes applied.

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
        batching: BatchingParameters | None = None,
        rest_timeout_seconds: float | None = None,
        config_file: str | None = None,
        config_poll_seconds: float = 0.0,
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
        if not isinstance(grpc_workers, int) or isinstance(grpc_workers, bool) or grpc_workers < 1:
            raise ValueError(f"`grpc_workers` must be an int >= 1. Received: grpc_workers={grpc_workers!r}")
        if rest_timeout_seconds is not None and not rest_timeout_seconds > 0:
            raise ValueError(
                f"`rest_timeout_seconds` must be > 0 or None. Received: rest_timeout_seconds={rest_timeout_seconds!r}"
            )
        if config_poll_seconds < 0 or (config_poll_seconds > 0 and config_file is None):
            raise ValueError(
                "`config_poll_seconds` must be >= 0, and > 0 only with a `config_file`. "
                f"Received: config_poll_seconds={config_poll_seconds!r}, config_file={config_file!r}"
            )
        self.repository = ModelRepository(models, poll_seconds=poll_seconds)
        self.host = host
        self._requested = (rest_port, grpc_port)
        self.max_request_bytes = max_request_bytes
        self.grpc_workers = grpc_workers
        self.batching = batching
        self.rest_timeout_seconds = rest_timeout_seconds
        self.config_file = config_file
        self.config_poll_seconds = config_poll_seconds
        self.batcher = None
        self._timed_pool: ThreadPoolExecutor | None = None
        self._config_stop = threading.Event()
        self._config_thread: threading.Thread | None = None
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
            if self.batching is not None:
                from keras_vit.export.batching import Batcher

                self.batcher = Batcher(self.batching)
            elif self.rest_timeout_seconds is not None:
                self._timed_pool = ThreadPoolExecutor(thread_name_prefix="keras-vit-predict")
            if rest_port is not None:
                from keras_vit.export.rest import make_rest_server

                self._http = make_rest_server(
                    self.repository,
                    self.host,
                    rest_port,
                    self.max_request_bytes,
                    run=self._run,
                    timeout_seconds=self.rest_timeout_seconds,
                )
                self.rest_port = self._http.server_address[1]
                self._http_thread = threading.Thread(
                    target=self._http.serve_forever, kwargs={"poll_interval": 0.2}, name="keras-vit-rest", daemon=True
                )
                self._http_thread.start()
            if grpc_port is not None:
                from keras_vit.export.grpc_service import make_grpc_server

                self._grpc, self.grpc_port = make_grpc_server(
                    self.repository, self.host, grpc_port, self.max_request_bytes, self.grpc_workers, run=self._run
                )
                self._grpc.start()
            if self.config_poll_seconds > 0:
                self._config_stop.clear()
                self._config_thread = threading.Thread(
                    target=self._watch_config, name="keras-vit-config-poller", daemon=True
                )
                self._config_thread.start()
        except Exception:
            self.stop()
            raise
        log.info("keras-vit serve: REST on %s:%s, gRPC on %s:%s", self.host, self.rest_port, self.host, self.grpc_port)
        return self

    def _run(self, loaded: LoadedVersion, signature: str, inputs: dict, timeout: float | None) -> dict:
        """Answers one predict call: through the batcher, or on its own within `timeout` seconds."""
        from keras_vit.export.loaded_version import run_signature

        if self.batcher is not None:
            return self.batcher.run(loaded, signature, inputs, timeout)
        if timeout is None or self._timed_pool is None:
            return run_signature(loaded, signature, inputs)
        future = self._timed_pool.submit(run_signature, loaded, signature, inputs)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise ServingError("DEADLINE_EXCEEDED", f"Deadline exceeded after {timeout * 1000:.0f} ms.") from None

    def _watch_config(self) -> None:
        """Re-reads the models.config and serves what it lists now (TF Serving's config file polling)."""
        from keras_vit.export.models_config import read_models_config

        while not self._config_stop.wait(self.config_poll_seconds):
            try:
                models = read_models_config(self.config_file)
                if {k: os.path.abspath(v) for k, v in models.items()} != self.repository.models:
                    log.info("Model config %s changed: serving %s", self.config_file, sorted(models))
                    self.repository.set_models(models)
            except Exception as error:  # noqa: BLE001 - a half-written or broken file keeps the current models
                log.error("Could not apply the model config %s: %s", self.config_file, error)

    def stop(self) -> None:
        """Stops both front ends, the pollers and the batcher."""
        self._config_stop.set()
        if self._config_thread is not None:
            self._config_thread.join(timeout=10)
            self._config_thread = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait(5)
            self._grpc = None
        if self.batcher is not None:
            self.batcher.stop()
            self.batcher = None
        if self._timed_pool is not None:
            self._timed_pool.shutdown(wait=False, cancel_futures=True)
            self._timed_pool = None
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


def set_tensorflow_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """Sets TensorFlow's thread pools (TF Serving's `--tensorflow_intra_op_parallelism`/`inter_op`); 0 = TF's choice.

    Must run before TensorFlow runs its first op: the pools are fixed from then on.
    """
    for label, value in (("tensorflow_intra_op_parallelism", intra_op), ("tensorflow_inter_op_parallelism", inter_op)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"--{label} must be an int >= 0 (0: TensorFlow's choice). Received: {label}={value!r}")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as error:
        raise ValueError(
            "TensorFlow's thread pools are fixed once it ran an op; set them before loading any model. "
            f"Received: intra_op={intra_op}, inter_op={inter_op} ({error})"
        ) from None
