"""Malformed safetensors headers: each is refused with a CheckpointError naming the file and the tensor.

Every verdict is compared with the reference `safetensors` library on the same
bytes: whatever it refuses we refuse, and whatever it accepts we load to the
same arrays. The one deliberate difference (a repeated header key, which the
reference resolves by keeping the last copy) is tested on its own.
"""

import json
import struct

import numpy as np
import pytest
import safetensors
import safetensors.numpy

from keras_vit.weights import CheckpointError, read_safetensors

DATA = np.arange(4, dtype="<f4").tobytes()  # 16 bytes


def entry(dtype="F32", shape=(4,), offsets=(0, 16)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def blob(header, data=DATA) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def reference_verdict(path):
    """The reference library's arrays, or None when it refuses the file."""
    try:
        return safetensors.numpy.load_file(path)
    except safetensors.SafetensorError:
        return None


MALFORMED = {
    "negative dimension": (blob({"w": entry(shape=(-4,))}), r"tensor 'w' has shape \[-4\]; dimensions must be"),
    "overflowing dimensions": (blob({"w": entry(shape=(2**62, 2**40))}), r"tensor 'w' .* overflowing int64"),
    "float dimension": (blob({"w": entry(shape=(4.0,))}), r"tensor 'w' has shape \[4.0\]"),
    "boolean dimension": (blob({"w": entry(shape=(True, 4))}), r"tensor 'w' has shape \[True, 4\]"),
    "shape not a list": (blob({"w": entry() | {"shape": 4}}), r"tensor 'w' has shape 4"),
    "too few bytes for the shape": (blob({"w": entry(shape=(5,))}), r"tensor 'w' of shape \(5,\) .* needs 20 bytes"),
    "end before begin": (blob({"w": entry(offsets=(16, 0))}), r"tensor 'w' .* data_offsets \[16, 0\]"),
    "negative offset": (blob({"w": entry(offsets=(-16, 0))}), r"tensor 'w' has data_offsets \[-16, 0\]"),
    "three offsets": (blob({"w": entry(offsets=(0, 16, 16))}), r"tensor 'w' has data_offsets \[0, 16, 16\]"),
    "offsets past the end": (blob({"w": entry(offsets=(16, 32))}), r"tensor 'w' \(data_offsets \[16, 32\]\) leaves"),
    "tensor past the end of the file": (
        blob({"a": entry(shape=(4,)), "b": entry(offsets=(16, 32))}),
        r"is truncated: tensor 'b' ends at byte \d+ but the file has \d+ bytes",
    ),
    "overlapping ranges": (
        blob({"a": entry(shape=(4,)), "b": entry(shape=(2,), offsets=(8, 16))}),
        r"tensor 'b' \(data_offsets \[8, 16\]\) overlaps tensor 'a'",
    ),
    "hole between ranges": (
        blob({"a": entry(shape=(1,), offsets=(0, 4)), "b": entry(shape=(2,), offsets=(8, 16))}),
        r"tensor 'b' .* leaves a hole of 4 bytes after tensor 'a'",
    ),
    "bytes no tensor owns": (blob({"w": entry(shape=(2,), offsets=(0, 8))}), r"the last 8 bytes belong to no tensor"),
    "unknown dtype": (blob({"w": entry(dtype="F33")}), r"tensor 'w' has dtype 'F33', which keras_vit cannot read"),
    "dtype not a string": (blob({"w": entry(dtype=4)}), r"tensor 'w' has dtype '4'"),
    "missing field": (blob({"w": {"dtype": "F32", "shape": [4]}}), r"tensor 'w' has a malformed entry"),
    "entry not an object": (blob({"w": [1, 2]}), r"tensor 'w' has a malformed entry \[1, 2\]"),
    "header is a list": (blob([1, 2]), r"the header is a JSON list, not an object"),
    "metadata with a number": (
        blob({"__metadata__": {"epoch": 3}, "w": entry()}),
        r"__metadata__ must map strings to strings",
    ),
    "metadata a list": (blob({"__metadata__": ["a"], "w": entry()}), r"__metadata__ must map strings to strings"),
    "NaN in the header": (blob(b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"x":NaN}'), r"holds NaN"),
    "unpaired surrogate": (
        blob(b'{"__metadata__":{"a":"\\ud800"},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'),
        r"unreadable safetensors header",
    ),
    "repeated field": (
        blob(b'{"w":{"dtype":"F32","dtype":"F32","shape":[4],"data_offsets":[0,16]}}'),
        r"repeats the key 'dtype'",
    ),
    "not UTF-8": (blob(b'{"\xff":1}'), r"unreadable safetensors header \(UnicodeDecodeError"),
    "deeply nested": (blob(b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), r"unreadable safetensors header"),
    "header length 0": (struct.pack("<Q", 0) + DATA, r"declared header length 0 bytes"),
    "header length past the file": (struct.pack("<Q", 10**6) + b"{}", r"declared header length 1000000 bytes"),
    "header length over the limit": (struct.pack("<Q", 2**63) + b"{}", r"declared header length \d+ bytes"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_is_refused_like_the_reference_library(case, tmp_path):
    data, message = MALFORMED[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=message) as error:
        read_safetensors(str(path))
    assert str(path) in str(error.value)
    assert reference_verdict(str(path)) is None, "the reference library accepts this file"


ACCEPTED = {
    "unaligned offsets": blob(
        {"a": entry(dtype="U8", shape=(1,), offsets=(0, 1)), "b": entry(offsets=(1, 17))}, b"\x07" + DATA
    ),
    "offsets out of name order": blob(
        {"b": entry(shape=(2,), offsets=(8, 16)), "a": entry(shape=(2,), offsets=(0, 8))}
    ),
    "zero-size and scalar tensors": blob(
        {
            "e": entry(shape=(0, 3), offsets=(0, 0)),
            "s": entry(shape=(), offsets=(0, 4)),
            "r": entry(shape=(3,), offsets=(4, 16)),
        }
    ),
    "unknown entry fields and null metadata": blob({"__metadata__": None, "w": entry() | {"note": 1}}),
    "whitespace around the JSON": blob(b' \n{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}\t  '),
    "no tensors": blob({"__metadata__": {"k": "v"}}, b""),
    "unsigned and complex dtypes": blob(
        {
            "u16": entry(dtype="U16", shape=(2,), offsets=(0, 4)),
            "u32": entry(dtype="U32", shape=(1,), offsets=(4, 8)),
            "c64": entry(dtype="C64", shape=(1,), offsets=(8, 16)),
        }
    ),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_files_the_reference_accepts_load_identically(case, tmp_path):
    path = tmp_path / "ok.safetensors"
    path.write_bytes(ACCEPTED[case])
    expected = reference_verdict(str(path))
    assert expected is not None
    tensors, _ = read_safetensors(str(path))
    assert set(tensors) == set(expected)
    for name, value in expected.items():
        assert tensors[name].dtype == value.dtype and tensors[name].shape == value.shape
        np.testing.assert_array_equal(tensors[name], value)


def test_repeated_tensor_name_is_refused_where_the_reference_keeps_the_last(tmp_path):
    """Two entries under one name are ambiguous; the reference silently keeps the last one."""
    path = tmp_path / "dup.safetensors"
    info = json.dumps(entry())
    path.write_bytes(blob(f'{{"w":{info},"w":{info}}}'.encode()))
    assert set(reference_verdict(str(path))) == {"w"}
    with pytest.raises(
        CheckpointError, match=rf"'{path}' is not a valid safetensors file: the header repeats the key 'w'"
    ):
        read_safetensors(str(path))


def test_huge_claimed_sizes_are_refused_before_anything_is_allocated(tmp_path):
    """A header may claim terabytes; validation against the file size comes before any read."""
    import tracemalloc

    path = tmp_path / "huge.safetensors"
    path.write_bytes(blob({"w": entry(shape=(2**20, 2**20), offsets=(0, 4 * 2**40))}))
    tracemalloc.start()
    with pytest.raises(CheckpointError, match=r"is truncated: tensor 'w' ends at byte"):
        read_safetensors(str(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000
