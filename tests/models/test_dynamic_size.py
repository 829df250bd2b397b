"""Any image size at run time (timm's `dynamic_img_size`): the learned position table resampled in the graph.

Parity runs against timm built with `dynamic_img_size=True` and the same
perturbed random weights, at the native size and at larger and smaller
non-square sizes; float32, max abs difference 1e-4.
"""

import timm  # noqa: I001  (torch/timm before TensorFlow; see tests/conftest.py)
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch

import keras_vit
from keras_vit.layers.position import (
    bicubic_resize_matrix,
    bicubic_resize_matrix_in_graph,
    resample_position_embeddings,
    resample_position_embeddings_in_graph,
)
from keras_vit.models.registry import model_spec
from keras_vit.models.vit import ViTConfig, vit_param_count
from tests.parity.vit_parity_utils import TOLERANCE, max_diff, randomize_, save_state, to_torch

NATIVE = 64
SIZES = [(64, 64), (96, 80), (48, 32)]  # native, larger non-square, smaller non-square
# (timm name, extra timm/keras_vit arguments): class token with its own table entry; registers and
# no_embed_class (DINOv2-reg); InternViT-300M's own layout (LayerScale, no final norm) at depth 1.
CASES = [
    ("vit_small_patch16_224", dict(depth=2)),
    ("vit_small_patch14_reg4_dinov2", dict(depth=2, patch_size=16)),
    ("vit_intern300m_patch14_448", dict(depth=1, patch_size=16)),
]


def _images(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, height, width, 3)).astype("float32")


def _pair(name: str, overrides: dict, tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model(name, img_size=NATIVE, dynamic_img_size=True, **overrides)
    path = save_state(randomize_(reference), tmp_path / "model.safetensors")
    ours = keras_vit.ViT(name, image_size=NATIVE, dynamic_image_size=True, weights=path, **overrides)
    return reference, ours


@pytest.mark.parametrize("name,overrides", CASES, ids=[name for name, _ in CASES])
def test_vit_logits_match_timm_at_three_sizes(name, overrides, tmp_path):
    reference, ours = _pair(name, overrides, tmp_path)
    assert tuple(ours.input.shape) == (None, None, None, 3)
    for height, width in SIZES:
        x = _images(height, width)
        with torch.no_grad():
            expected = reference(to_torch(x)).numpy()
        assert max_diff(ours(x), expected) < TOLERANCE, (height, width)


def test_eva_with_absolute_table_and_rope_matches_timm_at_three_sizes(tmp_path):
    name = "vit_small_patch16_rope_ape_224"  # ROPE-ViT: axial rope plus a learned table without prefix entries
    torch.manual_seed(0)
    reference = timm.create_model(name, depth=2, img_size=NATIVE, dynamic_img_size=True)
    assert reference.pos_embed is not None and reference.rope is not None
    path = save_state(randomize_(reference), tmp_path / "model.safetensors")
    ours = keras_vit.EVA(name, depth=2, image_size=NATIVE, dynamic_image_size=True, weights=path)
    for height, width in SIZES:
        x = _images(height, width, seed=1)
        with torch.no_grad():
            expected = reference(to_torch(x)).numpy()
        assert max_diff(ours(x), expected) < TOLERANCE, (height, width)


@pytest.mark.parametrize("in_size,out_size", [(4, 4), (4, 7), (7, 3), (14, 32), (14, 5), (1, 3)])
def test_graph_weights_equal_the_numpy_reference_and_torch(in_size, out_size):
    graph = np.asarray(bicubic_resize_matrix_in_graph(in_size, out_size))
    np.testing.assert_allclose(graph, bicubic_resize_matrix(in_size, out_size), atol=1e-6)
    # torch's antialiased bicubic interpolation of the identity's rows is the resize matrix.
    eye = torch.eye(in_size, dtype=torch.float64)[:, None, None, :]  # (in, 1, 1, in): one basis vector per batch
    resized = torch.nn.functional.interpolate(eye, size=(1, out_size), mode="bicubic", antialias=True)
    np.testing.assert_allclose(graph, resized[:, 0, 0, :].numpy().T, atol=1e-6)


def test_graph_resampling_matches_the_static_one_with_prefix_entries():
    table = np.random.default_rng(0).standard_normal((1, 2 + 4 * 5, 8)).astype("float32")
    static = resample_position_embeddings(table, (4, 5), (7, 3), num_prefix_tokens=2)
    graph = resample_position_embeddings_in_graph(keras.ops.convert_to_tensor(table), (4, 5), (7, 3), 2)
    np.testing.assert_allclose(np.asarray(graph), static, atol=1e-5)
    same = resample_position_embeddings_in_graph(keras.ops.convert_to_tensor(table), (4, 5), (4, 5), 2)
    np.testing.assert_allclose(np.asarray(same), table, atol=1e-6)


def test_intern300m_parameter_count_equals_timm():
    with torch.device("meta"):
        reference = timm.create_model("vit_intern300m_patch14_448")
    expected = sum(p.numel() for p in reference.parameters())
    spec = model_spec("vit_intern300m_patch14_448")
    assert spec.num_params == expected
    assert vit_param_count(ViTConfig(**spec.arch)) == expected
    assert spec.arch["dynamic_image_size"] and tuple(spec.input_size) == (448, 448)
    assert "vit_intern300m_patch14_448" in keras_vit.list_models("vit_intern*")


SMALL = dict(image_size=32, patch_size=8, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=3)


def test_keras_round_trip_stays_dynamic(tmp_path):
    model = keras_vit.ViT(**SMALL, dynamic_image_size=True)
    model.get_layer("pos_embed").embeddings.assign(np.random.default_rng(0).standard_normal((1, 17, 32)))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.config.dynamic_image_size and tuple(loaded.input.shape) == (None, None, None, 3)
    for height, width in [(32, 32), (48, 24)]:
        x = _images(height, width)
        np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_one_compiled_function_runs_two_sizes():
    import tensorflow as tf

    model = keras_vit.ViT(**SMALL, dynamic_image_size=True)
    run = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    for height, width in [(32, 32), (40, 56)]:
        x = _images(height, width)
        np.testing.assert_allclose(run(x).numpy(), np.asarray(model(x)), atol=1e-5)
    assert run.experimental_get_tracing_count() == 1  # one graph, sizes known only at run time, served both
    assert model.predict(_images(40, 56), verbose=0).shape == (2, 3)


def test_a_static_model_still_names_with_image_size_and_bad_sizes_say_why():
    import re

    static = keras_vit.ViT(**SMALL)
    with pytest.raises(ValueError, match=re.escape("model.with_image_size((48, 24))")):
        static(_images(48, 24))
    dynamic = keras_vit.ViT(**SMALL, dynamic_image_size=True)
    with pytest.raises(ValueError, match=r"Image width 30 does not fit patch size 8"):
        dynamic(_images(32, 30))
    with pytest.raises(ValueError, match="position_embedding='sincos'"):
        keras_vit.ViT(**SMALL, dynamic_image_size=True, position_embedding="sincos")


def test_old_configs_without_the_field_build_a_fixed_size_model():
    config = keras_vit.ViT(**SMALL).get_config()
    config.pop("dynamic_image_size")
    rebuilt = keras_vit.ViT.from_config(config)
    assert not rebuilt.config.dynamic_image_size and tuple(rebuilt.input.shape) == (None, 32, 32, 3)
    layer_config = rebuilt.get_layer("pos_embed").get_config()
    layer_config.pop("patch_size")
    assert keras_vit.layers.PositionEmbedding.from_config(layer_config).patch_size is None


@pytest.mark.slow
def test_jax_backend_runs_a_dynamic_model_at_two_sizes():
    script = (
        "import numpy as np, keras_vit\n"
        "m = keras_vit.ViT(image_size=32, patch_size=8, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64,"
        " num_classes=3, dynamic_image_size=True)\n"
        "for s in [(32, 32), (48, 24)]:\n"
        "    print(np.asarray(m(np.ones((1, *s, 3), 'float32'))).shape)\n"
    )
    env = dict(__import__("os").environ, KERAS_BACKEND="jax")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["(1,", "3)", "(1,", "3)"]


def test_nhwc_feature_maps_match_timm_at_a_new_size(tmp_path):
    reference, ours = _pair("vit_small_patch14_reg4_dinov2", dict(depth=2, patch_size=16), tmp_path)
    x = _images(96, 80, seed=2)
    with torch.no_grad():
        expected = reference.forward_intermediates(to_torch(x), indices=[0, 1], intermediates_only=True)
    maps = ours.forward_intermediates(x, indices=[0, 1], output_fmt="NHWC")["blocks"]
    for got, want in zip(maps, expected):
        assert tuple(got.shape) == (2, 6, 5, 384)
        assert max_diff(got, want.numpy().transpose(0, 2, 3, 1)) < TOLERANCE


def test_mixed_precision_dynamic_model_follows_float32():
    reference = keras_vit.ViT(**SMALL, dynamic_image_size=True)
    mixed = keras_vit.ViT(**SMALL, dynamic_image_size=True, dtype="mixed_bfloat16")
    mixed.set_weights(reference.get_weights())
    x = _images(48, 24)
    got = np.asarray(mixed(x))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(reference(x)), atol=5e-2)


def test_export_of_a_dynamic_model_has_all_three_signatures(tmp_path):
    import tensorflow as tf

    from keras_vit.export.saved_model import saved_model

    model = keras_vit.ViT(**SMALL, dynamic_image_size=True)
    version = saved_model(
        model, str(tmp_path / "vit"), mean=(0.5,) * 3, std=(0.5,) * 3, verify=True
    )  # reloaded = model
    assert set(tf.saved_model.load(version).signatures) == {"serving_default", "serve_image_bytes", "features"}


def test_eva_with_a_learned_table_round_trips_dynamic(tmp_path):
    model = keras_vit.EVA(
        "vit_small_patch16_rope_ape_224", depth=1, image_size=32, num_classes=3, dynamic_image_size=True
    )
    model.get_layer("pos_embed").embeddings.assign(np.random.default_rng(0).standard_normal((1, 4, 384)))
    path = str(tmp_path / "eva.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert tuple(loaded.input.shape) == (None, None, None, 3)
    x = _images(48, 32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-5)
