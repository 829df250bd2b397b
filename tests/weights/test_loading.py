"""Loading into keras_vit models: round trips, all-or-nothing refusals, heads, checksums, pickles."""

import re
import warnings

import numpy as np
import pytest
import torch

import keras_vit
from keras_vit.weights import (
    CheckpointError,
    load_pretrained,
    load_state_dict,
    model_state_dict,
    save_weights,
    sha256_of,
    write_safetensors,
)
from tests.weights.conftest import TINY, snapshot


def assert_unchanged(model, before):
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value)


@pytest.mark.parametrize("suffix", [".safetensors", ".weights.h5"])
def test_round_trip_through_both_formats(suffix, tiny, batch, tmp_path):
    source = tiny(seed=1, num_register_tokens=2, layer_scale_init=1e-5, distillation_token=True)
    path = save_weights(source, str(tmp_path / f"w{suffix}"))
    target = tiny(seed=2, num_register_tokens=2, layer_scale_init=1e-5, distillation_token=True)
    report = target.load_pretrained(path)
    assert report.loaded == len(target.weights)
    np.testing.assert_array_equal(target(batch), source(batch))


def test_weights_keyword_loads_and_is_not_in_config(tiny, batch, tmp_path):
    source = tiny(seed=1)
    path = save_weights(source, str(tmp_path / "w.safetensors"))
    model = keras_vit.ViT(
        weights=path, image_size=16, patch_size=8, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=3
    )
    np.testing.assert_array_equal(model(batch), source(batch))
    assert "weights" not in model.get_config()


def test_missing_key_lists_key_and_shape_and_loads_nothing(tiny, tmp_path):
    state = model_state_dict(tiny(seed=1))
    del state["blocks.0.mlp.fc1.weight"]
    path = str(tmp_path / "m.safetensors")
    write_safetensors(path, state)
    model = tiny(seed=2)
    before = snapshot(model)
    with pytest.raises(CheckpointError) as info:
        model.load_pretrained(path)
    assert "nothing was loaded" in str(info.value)
    assert (
        "missing from the file (model key, model shape in timm layout) (1):\n    blocks.0.mlp.fc1.weight (64, 32)"
        in str(info.value)
    )
    assert_unchanged(model, before)


def test_unexpected_key_and_shape_mismatch_are_listed_together(tiny):
    state = model_state_dict(tiny(seed=1))
    state["blocks.0.attn.q_norm.weight"] = np.ones(16, "float32")
    state["blocks.0.mlp.fc2.bias"] = np.zeros(31, "float32")
    model = tiny(seed=2)
    before = snapshot(model)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(model, state)
    message = str(info.value)
    assert "unexpected in the file (file key, shape) (1):\n    blocks.0.attn.q_norm.weight (16)" in message
    assert "shape mismatches (1):\n    blocks.0.mlp.fc2.bias: file (31) (as Keras (31)) vs model (32)" in message
    assert "nothing was loaded" in message
    assert_unchanged(model, before)


def test_a_single_bad_tensor_never_half_fills_the_model(tiny):
    """Every tensor but the last (alphabetically) fits: still nothing may be written."""
    state = model_state_dict(tiny(seed=1))
    last = sorted(state)[-1]
    state[last] = np.zeros((7,) + state[last].shape[1:], "float32")
    model = tiny(seed=2)
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=re.escape(last)):
        load_state_dict(model, state)
    assert_unchanged(model, before)


def test_wrapper_prefix_is_stripped(tiny, batch, tmp_path):
    source = tiny(seed=1)
    path = str(tmp_path / "ddp.safetensors")
    write_safetensors(path, {f"module.{k}": v for k, v in model_state_dict(source).items()})
    model = tiny(seed=2)
    model.load_pretrained(path)
    np.testing.assert_array_equal(model(batch), source(batch))


def test_head_replaced_dropped_absent_each_say_so(tiny, tmp_path):
    path = save_weights(tiny(seed=1), str(tmp_path / "w.safetensors"))
    with pytest.warns(UserWarning, match=r"Classifier head not loaded: .*head.bias \(3\) vs \(5\).*keeps its new"):
        report = tiny(num_classes=5).load_pretrained(path)
    assert report.head == "replaced" and report.skipped == ["head.bias", "head.weight"]
    with pytest.warns(UserWarning, match=r"model has no classifier head; dropping .*\(3 classes\)"):
        assert tiny(num_classes=0).load_pretrained(path).head == "dropped"
    headless = save_weights(tiny(seed=1, num_classes=0), str(tmp_path / "headless.safetensors"))
    with pytest.warns(UserWarning, match=r"no classifier head; the model keeps its freshly initialised"):
        assert tiny(num_classes=4).load_pretrained(headless).head == "absent"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tiny().load_pretrained(path).head == "loaded"


def test_position_embedding_that_is_not_a_grid_is_refused(tiny):
    state = model_state_dict(tiny(seed=1))
    state["pos_embed"] = np.zeros((1, 7, 32), "float32")  # 1 class entry + 6 patches: no square grid
    model = tiny()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=r"\(1, 7, 32\) does not hold 1 prefix entries plus a patch grid"):
        load_state_dict(model, state)
    assert_unchanged(model, before)


def test_resampled_model_reports_grids(tiny, tmp_path):
    path = save_weights(tiny(seed=1), str(tmp_path / "w.safetensors"))
    with pytest.warns(UserWarning, match=r"from a 2x2 to a 4x4 patch grid"):
        report = tiny(image_size=32).load_pretrained(path)
    assert report.resampled == ((2, 2), (4, 4))


def test_sha256_verified(tiny, tmp_path):
    path = save_weights(tiny(seed=1), str(tmp_path / "w.safetensors"))
    digest = sha256_of(path)
    tiny().load_pretrained(path, sha256=digest.upper())
    model = tiny()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=rf"SHA-256 mismatch .*expected {'0' * 64}, file has {digest}"):
        model.load_pretrained(path, sha256="0" * 64)
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match=r"`sha256` must be 64 hexadecimal digits. Received: sha256='abc'"):
        model.load_pretrained(path, sha256="abc")


@pytest.mark.parametrize("name,zip_format", [("model.pth", True), ("pytorch_model.bin", True), ("legacy.pt", False)])
def test_pickles_are_refused_with_the_conversion_recipe(name, zip_format, tiny, tmp_path):
    path = str(tmp_path / name)
    torch.save({"cls_token": torch.zeros(1, 1, 32)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match=r"PyTorch pickle checkpoint. keras_vit never unpickles files") as info:
        tiny().load_pretrained(path)
    assert "from safetensors.torch import save_file" in str(info.value)
    assert "weights_only=True" in str(info.value)


def test_damaged_files_fail_cleanly(tiny, tmp_path):
    model = tiny()
    with pytest.raises(CheckpointError, match=r"does not exist, and it is not a catalogued name"):
        model.load_pretrained(str(tmp_path / "nope.safetensors"))
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty"):
        model.load_pretrained(str(tmp_path / "empty.safetensors"))
    np.savez(tmp_path / "w.npz", **{"embedding/kernel": np.zeros((8, 8, 3, 32), "float32")})
    data = (tmp_path / "w.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt"):
        model.load_pretrained(str(tmp_path / "cut.npz"))
    (tmp_path / "junk.dat").write_bytes(b"hello world, not weights")
    with pytest.raises(CheckpointError, match=r"Cannot tell the format"):
        model.load_pretrained(str(tmp_path / "junk.dat"))
    (tmp_path / "other.npz").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"not a ViT .npz checkpoint|missing from the file"):
        model.load_pretrained(str(tmp_path / "other.npz"))


def test_keras_weights_of_another_architecture_load_nothing(tiny, tmp_path):
    path = save_weights(tiny(seed=1, mlp_dim=48), str(tmp_path / "w.weights.h5"))
    model = tiny(seed=2)
    before = snapshot(model)
    expected = (
        r"does not fit model .vit. or is damaged \(ValueError: .*first bad variable block_0/mlp/fc1/kernel; "
        r"variable.shape=\(32, 64\), Received: value.shape=\(32, 48\)\). .*Nothing was loaded"
    )
    with pytest.raises(CheckpointError, match=expected):
        model.load_pretrained(path)
    assert_unchanged(model, before)


def test_save_refuses_unknown_extension(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"'.weights.h5' or '.safetensors'. Received: path=.*w.pt"):
        save_weights(tiny(), str(tmp_path / "w.pt"))


def test_loader_works_on_plain_function_without_model_import(tiny, batch, tmp_path):
    """`keras_vit.weights.load_pretrained(model, path)` is the same entry point as the method."""
    source = tiny(seed=4)
    path = save_weights(source, str(tmp_path / "w.safetensors"))
    model = tiny(seed=5)
    load_pretrained(model, path)
    np.testing.assert_array_equal(model(batch), source(batch))


def test_pre_logits_loads_even_when_the_classifier_is_replaced(tiny, tmp_path):
    """Fine-tuning an ImageNet-21k file (pre_logits + 21k head) to new classes keeps the pre-logits layer."""
    source = tiny(seed=1, representation_size=24)
    path = save_weights(source, str(tmp_path / "w.safetensors"))
    with pytest.warns(UserWarning, match=r"Classifier head not loaded"):
        model = keras_vit.ViT(**dict(TINY, representation_size=24, num_classes=5), weights=path)
    np.testing.assert_array_equal(
        model.get_layer("pre_logits").kernel.numpy(), source.get_layer("pre_logits").kernel.numpy()
    )
    x = np.ones((1, 16, 16, 3), "float32")
    np.testing.assert_array_equal(model.feature_extractor()(x), source.feature_extractor()(x))


def test_loads_into_a_mixed_precision_model(tiny, batch, tmp_path):
    source = tiny(seed=6)
    path = save_weights(source, str(tmp_path / "w.safetensors"))
    model = keras_vit.ViT(**TINY, dtype="mixed_float16", weights=path)
    assert model.get_layer("block_0").attn.qkv.kernel.dtype == "float32"  # variables stay float32
    np.testing.assert_allclose(model(batch), source(batch), atol=2e-2)


def test_a_checkpoint_of_another_family_or_size_names_what_the_model_is_and_what_the_file_holds(tmp_path):
    small = dict(image_size=28, num_classes=0)
    eva_file = str(tmp_path / "eva.safetensors")
    save_weights(keras_vit.create_model("eva02_tiny_patch14_224", depth=1, **small), eva_file)
    vit_file = str(tmp_path / "vit.safetensors")
    save_weights(keras_vit.create_model("vit_small_patch14_dinov2", depth=2, **small), vit_file)
    with pytest.raises(
        CheckpointError,
        match=r"the model is a ViT: width 384, depth 2, patch 14x14; the file holds "
        r"an EVA checkpoint: width 192, depth 1, patch 14x14",
    ):
        keras_vit.create_model("vit_small_patch14_dinov2", depth=2, weights=eva_file, **small)
    with pytest.raises(
        CheckpointError,
        match=r"the model is an EVA: width 192, depth 1, .*the file holds "
        r"a ViT checkpoint: width 384, depth 2",
    ):
        keras_vit.create_model("eva02_tiny_patch14_224", depth=1, weights=vit_file, **small)
