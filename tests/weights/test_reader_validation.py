"""Damaged `.npz`, Hugging Face and timm files: each is refused with a CheckpointError naming the file and the array."""

import io
import zipfile

import numpy as np
import pytest

from keras_vit.weights import CheckpointError, load_pretrained, read_checkpoint
from keras_vit.weights.npz import read_npz
from tests.vit_npz_layout import original_vit_arrays

BLOCK = "Transformer/encoderblock_0/"


def arrays():
    rng = np.random.default_rng(0)
    return original_vit_arrays(rng, dim=32, depth=1, heads=2, mlp=64, patch=8, grid=2, classes=3)


def saved(tmp_path, values, name="w.npz"):
    path = tmp_path / name
    np.savez(path, **values)
    return str(path)


def npy_member(header_shape, data: bytes, dtype="<f4") -> bytes:
    """A `.npy` member whose header claims `header_shape` but holds `data`."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": tuple(header_shape)})
    return buffer.getvalue() + data


def test_valid_file_reads_like_numpy(tmp_path):
    path = saved(tmp_path, arrays())
    ours = read_npz(path)
    with np.load(path) as reference:
        assert set(ours) == set(reference.files)
        for name in reference.files:
            np.testing.assert_array_equal(ours[name], reference[name])


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_archive_names_the_file(cut, tmp_path):
    with open(saved(tmp_path, arrays()), "rb") as f:
        data = f.read()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError, match=rf"'{path}'.*(truncated or corrupt|not a zip)"):
        read_checkpoint(str(path))


def test_shape_larger_than_the_stored_bytes_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("embedding/kernel.npy", npy_member((2**20, 2**20), b"\0" * 64))
    with pytest.raises(
        CheckpointError, match=rf"'{path}': array 'embedding/kernel' claims shape \(1048576, 1048576\) of float32"
    ):
        read_npz(str(path))


def test_object_and_string_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match=rf"'{path}': array 'embedding/kernel' has dtype object"):
        read_npz(str(path))
    np.savez(path, **{"cls": np.array(["abc"])})
    with pytest.raises(CheckpointError, match=r"array 'cls' has dtype <U3, which is not a numeric array"):
        read_npz(str(path))


def test_repeated_member_is_refused(tmp_path):
    path = tmp_path / "dup.npz"
    member = npy_member((2,), np.zeros(2, "<f4").tobytes())
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("cls.npy", member)
        archive.writestr("cls.npy", member)
    with pytest.raises(CheckpointError, match=rf"'{path}' holds array 'cls' twice"):
        read_npz(str(path))


@pytest.mark.parametrize(
    "name, shape, message",
    [
        (
            "embedding/kernel",
            (8, 8, 96),
            r"embedding/kernel \(8, 8, 96\) cannot form patch_embed.proj.weight",
        ),
        (
            f"{BLOCK}MultiHeadDotProductAttention_1/key/kernel",
            (32,),
            r"key/kernel \(32,\), .* cannot form blocks.0.attn.qkv.weight \(query, key and value differ",
        ),
        (f"{BLOCK}MultiHeadDotProductAttention_1/out/kernel", (), r"out/kernel \(\) cannot form blocks.0.attn.proj"),
    ],
)
def test_wrong_shapes_name_the_array(name, shape, message, tmp_path):
    values = arrays()
    values[name] = np.zeros(shape, "float32")
    path = saved(tmp_path, values)
    with pytest.raises(CheckpointError, match=rf"'{path}': array\(s\) .*{message}"):
        read_checkpoint(path)


def test_missing_block_array_names_the_array(tmp_path):
    values = arrays()
    del values[f"{BLOCK}MlpBlock_3/Dense_1/kernel"]
    path = saved(tmp_path, values)
    with pytest.raises(CheckpointError, match=rf"'{path}' has no array {BLOCK}MlpBlock_3/Dense_1/kernel"):
        read_checkpoint(path)


def test_missing_top_level_array_names_the_file_and_key(tiny, tmp_path):
    values = arrays()
    del values["Transformer/posembed_input/pos_embedding"]
    path = saved(tmp_path, values)
    with pytest.raises(CheckpointError, match=rf"(?s)The checkpoint '{path}' does not fit .*pos_embed \(1, 5, 32\)"):
        load_pretrained(tiny(), path)


def test_hf_attention_parts_of_different_shapes_name_the_file(tmp_path):
    from keras_vit.weights import write_safetensors

    prefix = "vit.encoder.layer.0.attention.attention."
    tensors = {"vit.embeddings.cls_token": np.zeros((1, 1, 4), "float32")}
    for part, rows in (("query", 4), ("key", 4), ("value", 3)):
        tensors[f"{prefix}{part}.weight"] = np.zeros((rows, 4), "float32")
    path = tmp_path / "hf.safetensors"
    write_safetensors(str(path), tensors)
    with pytest.raises(
        CheckpointError, match=rf"'{path}': the attention weights of layer 0 have shapes .*'value': \(3, 4\)"
    ):
        read_checkpoint(str(path))
    del tensors[f"{prefix}key.weight"]
    write_safetensors(str(path), tensors)
    with pytest.raises(CheckpointError, match=rf"'{path}': layer 0 has no attention \['key'\] weight"):
        read_checkpoint(str(path))


def test_architecture_inference_refuses_tensors_of_the_wrong_rank():
    from keras_vit.weights import infer_arch

    state = {"patch_embed.proj.weight": np.zeros((32, 3, 8), "float32")}
    with pytest.raises(
        CheckpointError, match=r"'patch_embed.proj.weight' has shape \(32, 3, 8\), where a ViT has a 4-D"
    ):
        infer_arch(state)
    state = {"patch_embed.proj.weight": np.zeros((32, 3, 8, 8), "float32"), "blocks.0.norm1.weight": np.ones(32)}
    with pytest.raises(CheckpointError, match=r"no 'blocks.0.mlp.fc1.weight'"):
        infer_arch(state)
