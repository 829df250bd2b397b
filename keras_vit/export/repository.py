"""Model versions on disk, loaded and refreshed the way TF Serving does it.

Each served model has a base folder of numbered versions. The highest version
is loaded and served (TF Serving's default `latest` policy); a poller checks
for new versions and swaps one in only after it loaded completely, so requests
never see a partial model: in-flight requests keep the version they started with.
A version that fails to load is reported in the status and the previous one
stays in service. The status follows TF Serving's version states: LOADING while
a version loads, AVAILABLE while it serves, END once it was unloaded (replaced,
deleted, or failed to load, with the error).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from keras_vit.export.errors import ServingError
from keras_vit.export.loaded_version import LoadedVersion, load_version
from keras_vit.export.saved_model import list_versions

log = logging.getLogger("keras_vit.serve")


def _fingerprint(path: str) -> tuple:
    """Names, sizes and modification times of every file under `path`."""
    entries = []
    for root, _, files in os.walk(path):
        for file in files:
            try:
                stat = os.stat(os.path.join(root, file))
            except OSError:
                continue
            entries.append((os.path.relpath(os.path.join(root, file), path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class ModelRepository:
    """Serves the highest complete version of each model and picks up new ones.

    Args:
        models: model name -> base folder holding numbered versions.
        poll_seconds: seconds between scans for new versions (TF Serving's
            `--file_system_poll_wait_seconds`); 0 disables polling.
    """

    def __init__(self, models: dict[str, str], poll_seconds: float = 1.0):
        if not models:
            raise ValueError("Serve at least one model. Received: models={}")
        self.models = {name: os.path.abspath(base) for name, base in models.items()}
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()  # one scan at a time (poller and explicit calls)
        self._current: dict[str, LoadedVersion] = {}
        self._failed: dict[tuple[str, int], tuple[str, tuple]] = {}  # -> (message, folder fingerprint)
        self._loading: set[tuple[str, int]] = set()
        self._ended: set[tuple[str, int]] = set()  # versions served before and unloaded since
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Loads any model whose highest version on disk is newer than the one served."""
        with self._refresh_lock:
            for name, base in list(self.models.items()):
                self._refresh_model(name, base)

    def set_models(self, models: dict[str, str]) -> None:
        """Serves exactly `models` from now on (a re-read models.config): new ones load, dropped ones unload."""
        if not models:
            raise ValueError("Serve at least one model. Received: models={}")
        models = {name: os.path.abspath(base) for name, base in models.items()}
        with self._refresh_lock:
            for name, base in self.models.items():
                if models.get(name) != base:  # dropped, or moved to another base path: start afresh
                    with self._lock:
                        self._current.pop(name, None)
                        self._loading = {k for k in self._loading if k[0] != name}
                        self._ended = {k for k in self._ended if k[0] != name}
                    self._failed = {k: v for k, v in self._failed.items() if k[0] != name}
                    log.info("Unloaded model %s (no longer in the model config)", name)
            self.models = models
            for name, base in models.items():
                self._refresh_model(name, base)

    def _refresh_model(self, name: str, base: str) -> None:
        """Swaps in the highest version of one model once it loaded completely."""
        on_disk = list_versions(base)
        versions = [v for v in on_disk if not self._still_failed(name, v, base)]
        current = self._current.get(name)
        if current is not None and current.version not in on_disk and versions:
            current = None  # the served version was deleted (a rollback): serve the highest one left
        for version in reversed(versions):  # newest first; a broken one falls back to the next
            if current is not None and current.version >= version:
                return
            path = os.path.join(base, str(version))
            with self._lock:
                self._loading.add((name, version))
            try:
                loaded = load_version(name, version, path)
            except Exception as error:  # noqa: BLE001  (a broken version must not take the server down)
                log.error("Could not load %s version %d from %s: %s", name, version, path, error)
                self._failed[(name, version)] = (f"{type(error).__name__}: {error}", _fingerprint(path))
                continue
            finally:
                with self._lock:
                    self._loading.discard((name, version))
            with self._lock:
                previous = self._current.get(name)
                self._current[name] = loaded
                self._ended.discard((name, version))
                if previous is not None:
                    self._ended.add((name, previous.version))
            log.info("Serving %s version %d from %s", name, version, path)
            return

    def _still_failed(self, name: str, version: int, base: str) -> bool:
        """A version that failed to load is retried once its files change (e.g. a copy finished)."""
        failed = self._failed.get((name, version))
        if failed is None:
            return False
        if failed[1] == _fingerprint(os.path.join(base, str(version))):
            return True
        del self._failed[(name, version)]
        return False

    def get(self, name: str, version: int | None = None) -> LoadedVersion:
        """The loaded version to answer a request, or NOT_FOUND like TF Serving."""
        with self._lock:
            current = self._current.get(name)
        if current is None or (version is not None and current.version != version):
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingError("NOT_FOUND", f"Servable not found for request: {request}")
        return current

    def status(self, name: str, version: int | None = None) -> list[dict[str, Any]]:
        """TF Serving's `model_version_status` list for a model (or one version), newest version first."""
        if name not in self.models:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
        ok = {"error_code": "OK", "error_message": ""}
        states: dict[int, tuple[str, dict[str, str]]] = {}
        with self._lock:
            current = self._current.get(name)
            for model, ended in self._ended:
                if model == name:
                    states[ended] = ("END", ok)
            for (model, failed), (message, _) in list(self._failed.items()):
                if model == name:
                    states[failed] = ("END", {"error_code": "UNKNOWN", "error_message": message})
            for model, loading in self._loading:
                if model == name:
                    states[loading] = ("LOADING", ok)
        if current is not None:
            states[current.version] = ("AVAILABLE", ok)
        entries = [
            {"version": str(v), "state": state, "status": dict(status)}
            for v, (state, status) in sorted(states.items(), reverse=True)
        ]
        if version is not None:
            entries = [e for e in entries if e["version"] == str(version)]
        if not entries:
            target = f"version {version} of model {name}" if version is not None else f"any versions of model {name}"
            raise ServingError("NOT_FOUND", f"Could not find {target}")
        return entries

    def start(self) -> ModelRepository:
        """Loads what is on disk now and starts the poller."""
        self.refresh()
        if self.poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="keras-vit-version-poller", daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as error:  # noqa: BLE001  (the poller thread keeps polling whatever one scan met)
                log.error("Version scan failed: %s", error)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
