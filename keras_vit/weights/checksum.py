"""SHA-256 verification of checkpoint files, and downloads that are atomic and checked on every use."""

from __future__ import annotations

import hashlib
import os
import re
import warnings

from keras_vit.weights.errors import CheckpointError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sha256_of(path: str, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks (checkpoints can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str, expected: str) -> None:
    """Raises `CheckpointError` unless `path` hashes to `expected` (64 hex digits, any case)."""
    if not isinstance(expected, str) or not _HEX64.match(expected.lower()):
        raise ValueError(f"`sha256` must be 64 hexadecimal digits. Received: sha256={expected!r}")
    actual = sha256_of(path)
    if actual != expected.lower():
        raise CheckpointError(
            f"SHA-256 mismatch for '{path}': expected {expected.lower()}, file has {actual}. "
            "The file is corrupt, truncated or a different checkpoint; download it again."
        )


def record_path(path: str) -> str:
    """Where the digest of a downloaded file is kept: beside it, as `<file>.sha256`."""
    return path + ".sha256"


def read_record(path: str) -> str | None:
    """The digest recorded for `path` at its first download, or None when there is none (or it is unreadable)."""
    try:
        with open(record_path(path)) as f:
            digest = f.read().split()[0].lower()
    except (OSError, IndexError):
        return None
    return digest if _HEX64.match(digest) else None


def fetch_verified(url: str, path: str, sha256: str | None = None) -> str:
    """Downloads `url` to `path` once, atomically, and checks the file against a digest on every later call.

    The digest is `sha256` when the publisher gives one, else the SHA-256 of the
    first download, recorded beside the file (`<file>.sha256`): trust on first
    use, so a file damaged or replaced in the cache later is caught. A cached
    file that no longer matches is downloaded again; a new download that does
    not match either raises (the file at `url` changed, or `sha256` is wrong),
    leaving the cache as it was. Downloads go to a temporary file in the cache
    folder and are renamed into place only when complete and verified.
    """
    import urllib.request

    from keras_vit.weights.safetensors_io import atomic_write

    if sha256 is not None and (not isinstance(sha256, str) or not _HEX64.match(sha256.lower())):
        raise ValueError(f"`sha256` must be 64 hexadecimal digits. Received: sha256={sha256!r}")
    expected = sha256.lower() if sha256 else read_record(path)
    if os.path.isfile(path):
        actual = sha256_of(path)
        if expected is None or actual == expected:
            if read_record(path) != actual:
                _write_record(path, actual)
            return path
        warnings.warn(
            f"Cached '{path}' has SHA-256 {actual}, not the expected {expected}: it was damaged or replaced. "
            f"Downloading it again from {url}.",
            stacklevel=2,
        )
    print(f"Downloading {url} to {path}")
    digest = hashlib.sha256()

    def download(f) -> None:
        with urllib.request.urlopen(url) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
        if expected is not None and digest.hexdigest() != expected:
            raise CheckpointError(
                f"SHA-256 mismatch for {url}: expected {expected}, the download has {digest.hexdigest()}; "
                f"nothing was written to '{path}'. If the publisher replaced the file on purpose, delete "
                f"'{record_path(path)}' to accept the new one; if you passed `sha256`, check it."
            )

    atomic_write(path, download)
    _write_record(path, digest.hexdigest())
    return path


def _write_record(path: str, digest: str) -> None:
    from keras_vit.weights.safetensors_io import atomic_write

    atomic_write(record_path(path), lambda f: f.write(f"{digest}  {os.path.basename(path)}\n".encode()))
