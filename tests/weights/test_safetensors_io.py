"""Our safetensors reader/writer against the reference `safetensors` library, and damaged files."""

import os

import numpy as np
import pytest
import safetensors.numpy
import torch
from safetensors.torch import save_file as torch_save_file

from keras_vit.weights import CheckpointError, read_safetensors, write_safetensors
from keras_vit.weights.safetensors_io import atomic_write

TENSORS = {
    "a.weight": np.arange(12, dtype="float32").reshape(3, 4),
    "b": np.array([1, -2], dtype="int64"),
    "c": np.ones((2, 1, 2), dtype="float16"),
    "scalar": np.array(3.5, dtype="float64"),
}


def test_reference_library_reads_what_we_write(tmp_path):
    path = str(tmp_path / "ours.safetensors")
    write_safetensors(path, TENSORS, {"producer": "test"})
    loaded = safetensors.numpy.load_file(path)
    assert set(loaded) == set(TENSORS)
    for name, value in TENSORS.items():
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].dtype == value.dtype
    with safetensors.safe_open(path, "np") as f:
        assert f.metadata() == {"producer": "test"}


def test_we_read_what_the_reference_library_writes_including_bfloat16(tmp_path):
    path = str(tmp_path / "ref.safetensors")
    safetensors.numpy.save_file(TENSORS, path, metadata={"format": "np"})
    tensors, metadata = read_safetensors(path)
    assert metadata == {"format": "np"}
    for name, value in TENSORS.items():
        np.testing.assert_array_equal(tensors[name], value)
    bf16 = torch.randn(3, 5).to(torch.bfloat16)
    torch_save_file({"w": bf16}, str(tmp_path / "bf16.safetensors"))
    tensors, _ = read_safetensors(str(tmp_path / "bf16.safetensors"))
    assert tensors["w"].dtype == np.float32
    np.testing.assert_array_equal(tensors["w"], bf16.float().numpy())


def test_truncated_file_fails_cleanly(tmp_path):
    path = tmp_path / "t.safetensors"
    write_safetensors(str(path), {"w": np.zeros((64, 64), "float32")})
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=r"is truncated: tensor 'w' ends at byte \d+ but the file has \d+ bytes"):
        read_safetensors(str(path))
    path.write_bytes(data[:20])
    with pytest.raises(CheckpointError, match=r"damaged safetensors header.*truncated or corrupt"):
        read_safetensors(str(path))
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match=r"too short \(5 bytes\)"):
        read_safetensors(str(path))


def test_corrupt_header_fails_cleanly(tmp_path):
    path = tmp_path / "c.safetensors"
    write_safetensors(str(path), {"w": np.zeros((4,), "float32")})
    data = bytearray(path.read_bytes())
    data[8:12] = b"\xff\xfe{["
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"unreadable safetensors header"):
        read_safetensors(str(path))


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors(str(path), {"w": np.ones(3, "float32")})
    before = path.read_bytes()

    def failing(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(str(path), failing)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.safetensors"]  # no temporary file left behind


def test_unsupported_dtype_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Cannot store tensor 'x' of dtype complex128"):
        write_safetensors(str(tmp_path / "x.safetensors"), {"x": np.zeros(2, "complex128")})
