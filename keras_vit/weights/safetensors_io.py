"""Reads and writes the safetensors format with NumPy only, validating the header before reading any data.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian
header length N, N bytes of UTF-8 JSON mapping names to
`{dtype, shape, data_offsets}` (plus an optional `__metadata__` of strings),
then the byte buffer. `data_offsets` are `[begin, end)` relative to that
buffer; sorted, the tensors must tile it exactly, each spanning
`prod(shape) * itemsize` bytes. Reading it here, rather than through
`safetensors.numpy`, lets every malformed file fail with a `CheckpointError`
that names the file and the tensor, never allocates what the header merely
claims, and reads bfloat16 (which NumPy lacks) as float32. A file the
reference library accepts loads to the same arrays; the one deliberate
difference is that a header repeating a key is refused (the reference keeps
the last copy).
"""

from __future__ import annotations

import dataclasses
import json
import math
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
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
    "C64": np.complex64,
}
_ITEMSIZE = {name: np.dtype(value).itemsize for name, value in _DTYPES.items()} | {"BF16": 2}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000  # the reference library's limit
_INT64_MAX = 2**63 - 1
_FIX = "The file is corrupt or truncated; download or convert it again."


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One validated header entry: `[begin, end)` are offsets into the byte buffer after the header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _corrupt(path: str, what: str) -> CheckpointError:
    return CheckpointError(f"'{path}' is not a valid safetensors file: {what}. {_FIX}")


def _parse_json(raw: bytes, path: str) -> dict:
    """The header's JSON object; duplicate keys, NaN/Infinity and unpaired surrogates are refused."""

    def unique(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise _corrupt(path, f"the header repeats the key {key!r}")
            seen[key] = value
        return seen

    def constant(name):
        raise _corrupt(path, f"the header holds {name}, which JSON does not allow")

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=unique, parse_constant=constant)
        json.dumps(header, ensure_ascii=False).encode("utf-8")  # unpaired \ud800-style escapes fail here
    except (UnicodeError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(
            f"'{path}' has an unreadable safetensors header ({type(error).__name__}: {str(error)[:200]}). {_FIX}"
        ) from None
    if not isinstance(header, dict):
        raise _corrupt(path, f"the header is a JSON {type(header).__name__}, not an object")
    return header


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
        if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise CheckpointError(
                f"'{path}' has a damaged safetensors header (declared header length {length} bytes, file size "
                f"{size} bytes, limit {MAX_HEADER_BYTES}): the file is truncated or corrupt. "
                "Download or convert it again."
            )
        raw = f.read(length)
    return _parse_json(raw, path), 8 + length, size


def _is_count(value) -> bool:
    return type(value) is int and value >= 0  # bool is an int subclass, and not a size


def _entry(path: str, name: str, info) -> TensorEntry:
    """Checks one header entry's structure, dtype, shape and byte count."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise _corrupt(
            path, f"tensor {name!r} has a malformed entry {str(info)[:200]} (needs dtype, shape, data_offsets)"
        )
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
        raise CheckpointError(
            f"'{path}': tensor {name!r} has dtype {str(dtype)[:50]!r}, which keras_vit cannot read (unknown, or a "
            f"float8/float4 type). Supported: {', '.join(_ITEMSIZE)}."
        )
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise _corrupt(path, f"tensor {name!r} has shape {str(shape)[:200]}; dimensions must be integers >= 0")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise _corrupt(path, f"tensor {name!r} has data_offsets {str(offsets)[:200]}; they must be two integers >= 0")
    begin, end = offsets
    itemsize = _ITEMSIZE[dtype]
    needed = math.prod(shape) * itemsize
    nonzero = math.prod(d for d in shape if d) * itemsize  # NumPy refuses such shapes even when one dimension is 0
    if nonzero > _INT64_MAX:
        raise _corrupt(
            path, f"tensor {name!r} of shape {tuple(shape)} and dtype {dtype} claims {nonzero} bytes, overflowing int64"
        )
    if end < begin or end - begin != needed:
        raise _corrupt(
            path,
            f"tensor {name!r} of shape {tuple(shape)} and dtype {dtype} needs {needed} bytes but its data_offsets "
            f"[{begin}, {end}] span {end - begin}",
        )
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def tensor_entries(
    path: str, header: dict, data_start: int, file_size: int
) -> tuple[list[TensorEntry], dict[str, str]]:
    """Validates a parsed header against the file's byte buffer; returns `(entries, metadata)`.

    Raises:
        CheckpointError: naming the file and the first bad tensor.
    """
    header = dict(header)
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _corrupt(path, f"__metadata__ must map strings to strings, not {str(metadata)[:200]}")
    entries = [_entry(path, name, info) for name, info in header.items()]
    position, previous = 0, None
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if entry.begin != position:
            gap = "overlaps" if entry.begin < position else f"leaves a hole of {entry.begin - position} bytes after"
            after = f"tensor {previous!r}" if previous else "the start of the data"
            raise _corrupt(path, f"tensor {entry.name!r} (data_offsets [{entry.begin}, {entry.end}]) {gap} {after}")
        position, previous = entry.end, entry.name
        if data_start + position > file_size:
            raise CheckpointError(
                f"'{path}' is truncated: tensor {entry.name!r} ends at byte {data_start + position} but the file has "
                f"{file_size} bytes. Download or convert it again."
            )
    if data_start + position != file_size:
        raise _corrupt(path, f"the last {file_size - data_start - position} bytes belong to no tensor of the header")
    return entries, metadata


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Loads every tensor of a safetensors file as NumPy arrays, after validating the whole header.

    Args:
        path: str. A `.safetensors` file.

    Returns:
        `(tensors, metadata)`; bfloat16 tensors come back as float32.

    Raises:
        CheckpointError: the file is truncated, or its header is malformed
            (naming the file and the tensor).
    """
    header, start, size = read_header(path)
    entries, metadata = tensor_entries(path, header, start, size)
    tensors: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        for entry in entries:
            f.seek(start + entry.begin)
            buffer = f.read(entry.end - entry.begin)
            if len(buffer) != entry.end - entry.begin:
                raise CheckpointError(f"'{path}' changed while it was read (tensor {entry.name!r}); read it again.")
            if entry.dtype == "BF16":
                array = (np.frombuffer(buffer, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(buffer, dtype=np.dtype(_DTYPES[entry.dtype]).newbyteorder("<"))
            tensors[entry.name] = array.reshape(entry.shape).astype(array.dtype.newbyteorder("="), copy=True)
    return tensors, metadata


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
