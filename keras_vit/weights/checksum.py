"""SHA-256 verification of checkpoint files."""

from __future__ import annotations

import hashlib
import re

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
