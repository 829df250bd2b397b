"""Reads and writes the safetensors format with NumPy only, checking every offset.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian
header length, a JSON header mapping names to `{dtype, shape, data_offsets}`
(plus an optional `__metadata__` of strings), then the raw little-endian bytes.
Reading it here, rather than through `safetensors.numpy`, lets a truncated or
corrupt file fail with a message that says so, and reads bfloat16 (which NumPy
lacks) as float32.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from keras_vit.weights.errors import CheckpointError

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_header(path: str) -> tuple[dict, int, int]:
    """Returns `(header, data_start, file_size)`; raises `CheckpointError` on a damaged header."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(
                f"'{path}' is too short ({size} bytes) to be a safetensors file; it is truncated "
                "or not a checkpoint. Download or convert it again."
            )
        length = int.from_bytes(prefix, "little")
        if length <= 1 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise CheckpointError(
                f"'{path}' has a damaged safetensors header (declared header length {length} bytes, file size "
                f"{size} bytes): the file is truncated or corrupt. Download or convert it again."
            )
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"'{path}' has an unreadable safetensors header ({error}); the file is corrupt. "
            "Download or convert it again."
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"'{path}' has a safetensors header that is not a JSON object; the file is corrupt.")
    return header, 8 + length, size


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Loads every tensor of a safetensors file as NumPy arrays.

    Args:
        path: str. A `.safetensors` file.

    Returns:
        `(tensors, metadata)`; bfloat16 tensors come back as float32.
    """
    header, start, size = read_header(path)
    metadata = header.pop("__metadata__", None) or {}
    tensors: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], [int(s) for s in info["shape"]], info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(
                    f"'{path}': header entry {name!r} is malformed ({info!r}); the file is corrupt."
                ) from None
            if dtype != "BF16" and dtype not in _DTYPES:
                raise CheckpointError(
                    f"'{path}': tensor {name!r} has dtype {dtype}, which keras_vit cannot read. "
                    f"Supported: BF16, {', '.join(_DTYPES)}."
                )
            itemsize = 2 if dtype == "BF16" else np.dtype(_DTYPES[dtype]).itemsize
            expected = int(np.prod(shape, dtype=np.int64)) * itemsize
            if end - begin != expected or begin < 0:
                raise CheckpointError(
                    f"'{path}': tensor {name!r} of shape {tuple(shape)} and dtype {dtype} "
                    f"needs {expected} bytes but its offsets span {end - begin}; "
                    "the file is corrupt."
                )
            if start + end > size:
                raise CheckpointError(
                    f"'{path}' is truncated: tensor {name!r} ends at byte {start + end} but the file has {size} "
                    "bytes. Download or convert it again."
                )
            f.seek(start + begin)
            buffer = f.read(expected)
            if dtype == "BF16":
                bits = np.frombuffer(buffer, dtype="<u2").astype(np.uint32) << 16
                array = bits.view(np.float32)
            else:
                array = np.frombuffer(buffer, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
            tensors[name] = array.reshape(shape).astype(array.dtype.newbyteorder("="), copy=True)
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def write_safetensors(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Writes `tensors` atomically (a temporary file in the same folder, then a rename).

    Args:
        path: str. Destination file.
        tensors: name -> array; float32/float16/int arrays (no object arrays).
        metadata: optional string -> string pairs stored in the header.
    """
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset, arrays = 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if array.dtype not in _NAMES:
            raise ValueError(
                f"Cannot store tensor {name!r} of dtype {array.dtype} in safetensors. "
                f"Supported: {sorted(str(d) for d in _NAMES)}."
            )
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        header[name] = {
            "dtype": _NAMES[np.dtype(array.dtype.newbyteorder("="))],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
        arrays.append(array)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # align the data to 8 bytes, as the reference writer does
    atomic_write(
        path, lambda f: (f.write(len(raw).to_bytes(8, "little")), f.write(raw), [f.write(a.tobytes()) for a in arrays])
    )


def atomic_write(path: str, write) -> None:
    """Calls `write(file)` on a temporary file beside `path`, then renames it onto `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
