"""keras_vit.EVA: registry, parameter counts against timm, configs, saving, resizing, precision and errors."""

import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import keras_vit
from keras_vit.layers.rope import MixedRotaryEmbedding
from keras_vit.models.eva import EVA_FAMILIES, EVAConfig, eva_param_count
from keras_vit.models.timm_eva_variants import EVA_VARIANTS
from keras_vit.weights.errors import CheckpointError

EVA_NAMES = [row["name"] for row in EVA_VARIANTS]
# A small model with every uncommon part: mixed rope, SwiGLU with inner norm, RMSNorm, registers, MAP head.
SMALL = dict(
    image_size=32,
    patch_size=8,
    hidden_dim=32,
    depth=2,
    num_heads=2,
    mlp_dim=48,
    mlp_kind="swiglu",
    mlp_inner_norm=True,
    norm="rms",
    num_register_tokens=2,
    layer_scale_init=0.1,
    pooling="map",
    pool_num_heads=2,
    rope="mixed",
    rope_grid_indexing="xy",
    num_classes=5,
)


def _images(size=32, batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype("float32")


def test_every_timm_eva_name_is_registered_under_its_family():
    timm_names = [n for n in timm.list_models(module="eva") if not n.startswith("test_")]
    assert sorted(EVA_NAMES) == sorted(timm_names) and len(EVA_NAMES) == 65
    assert {keras_vit.model_spec(n).family for n in EVA_NAMES} == set(EVA_FAMILIES)


@pytest.mark.slow
def test_parameter_formula_equals_timm_meta_count_for_every_name():
    for name in EVA_NAMES:
        with torch.device("meta"):
            expected = sum(p.numel() for p in timm.create_model(name).parameters())
        assert keras_vit.model_spec(name).num_params == expected, name


@pytest.mark.slow  # about a minute: timm's registry is read in a fresh interpreter
def test_generated_tables_are_up_to_date():
    result = subprocess.run(
        [sys.executable, "-c", "import torch, timm; from tools.timm_eva_variants import main; raise SystemExit(main())",
         "--check"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def test_small_model_count_equals_formula_and_every_variable_trains():
    model = keras_vit.EVA(**SMALL)
    assert model.count_params() == eva_param_count(EVAConfig(**SMALL))
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(_images(), np.array([1, 3]), epochs=2, verbose=0)  # the zero head passes gradients from step 2
    unchanged = [v.path for v, b in zip(model.trainable_variables, before) if np.array_equal(v.numpy(), b)]
    assert not unchanged


def test_keras_round_trip_with_safe_mode(tmp_path):
    model = keras_vit.EVA(**SMALL)
    path = str(tmp_path / "eva.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is keras_vit.EVA and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(np.asarray(loaded(_images())), np.asarray(model(_images())), atol=1e-6)


def test_from_name_merges_overrides_and_config_round_trips():
    model = keras_vit.EVA("vit_small_patch16_rope_mixed_224", depth=1, image_size=64, num_classes=3)
    assert model.config.rope == "mixed" and model.config.num_classes == 3
    clone = keras_vit.EVA.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.count_params() == model.count_params()
    assert keras_vit.create_model("vit_small_patch16_rope_mixed_224", depth=1, image_size=64).variant == (
        "vit_small_patch16_rope_mixed_224"
    )


def test_dynamic_image_size_takes_any_multiple_of_the_patch():
    model = keras_vit.EVA(**dict(SMALL, position_embedding="none", dynamic_image_size=True, rope="centered",
                                 rope_rotate_half=True))  # fmt: skip
    assert model(_images(48)).shape == (2, 5)
    assert model(np.zeros((1, 40, 24, 3), "float32")).shape == (1, 5)
    with pytest.raises(ValueError, match=re.escape("Image size (30, 32) is not a multiple of the patch size")):
        model(np.zeros((1, 30, 32, 3), "float32"))


def test_with_image_size_matches_timm_set_input_size(tmp_path):
    timm_model = timm.create_model("eva02_tiny_patch14_224", depth=2, img_size=56).eval()
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    ours = keras_vit.EVA("eva02_tiny_patch14_224", depth=2, image_size=56, weights=str(tmp_path / "m.safetensors"))
    timm_model.set_input_size(img_size=84)
    resized = ours.with_image_size(84)
    images = _images(84)
    with torch.no_grad():
        expected = timm_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(np.asarray(resized(images)), expected, atol=1e-4, rtol=1e-4)


def test_features_intermediates_and_recipe_hooks():
    model = keras_vit.EVA(**SMALL)
    features = model.feature_extractor()(_images())
    assert tuple(features.shape) == (2, 32)
    out = model.forward_intermediates(_images())
    assert len(out["blocks"]) == 2 and tuple(out["attention"][0].shape) == (2, 2, 19, 19)
    np.testing.assert_allclose(np.asarray(out["logits"]), np.asarray(model(_images())), atol=1e-5)
    rope_freqs = [v for layer in model.layers if isinstance(layer, MixedRotaryEmbedding) for v in layer.weights]
    assert {id(v) for v in rope_freqs} <= {id(v) for v in model.no_weight_decay_variables()}
    groups = model.layer_groups()
    assert len(groups) == 4 and sum(len(g) for g in groups) == len(model.trainable_variables)
    assert any(v is rope_freqs[0] for v in groups[0])


def test_mixed_precision_forward():
    model = keras_vit.EVA(**SMALL, dtype="mixed_bfloat16")
    logits = model(_images())
    assert logits.dtype == "float32" and np.isfinite(np.asarray(logits)).all()


def test_a_checkpoint_of_another_family_or_size_is_refused_naming_both(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    model = keras_vit.EVA(**SMALL)
    with pytest.raises(CheckpointError, match=r"(?s)missing from the file.*blocks\.0\.attn\.q_bias.*unexpected"):
        model.load_pretrained(str(tmp_path / "vit.safetensors"))
    wider = timm.create_model("eva02_tiny_patch14_224", depth=2, img_size=56)
    save_file({k: v.contiguous() for k, v in wider.state_dict().items()}, str(tmp_path / "eva.safetensors"))
    small = keras_vit.EVA("eva02_tiny_patch14_224", depth=2, image_size=56, hidden_dim=96)
    with pytest.raises(CheckpointError, match=r"(?s)shape mismatches.*file \(192"):
        small.load_pretrained(str(tmp_path / "eva.safetensors"))


def test_bad_names_and_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="Did you mean: eva02_tiny_patch14_224"):
        keras_vit.EVA("eva02_tiny_patch14_22")
    with pytest.raises(ValueError, match="is a 'vit' model, not an EVA one"):
        keras_vit.EVA("vit_tiny_patch16_224")
    with pytest.raises(ValueError, match=re.escape("Unknown EVA argument(s) ['rope_type']")):
        keras_vit.EVA(rope_type="cat")
    with pytest.raises(ValueError, match="`rope` must be one of"):
        keras_vit.EVA(**dict(SMALL, rope="spiral"))
    with pytest.raises(ValueError, match="dynamic_image_size=True works with rotary embeddings only"):
        keras_vit.EVA(**dict(SMALL, dynamic_image_size=True))
    with pytest.raises(ValueError, match="Set rope_rotate_half=False"):
        keras_vit.EVA(**dict(SMALL, rope_rotate_half=True))
    with pytest.raises(ValueError, match=re.escape("Expected images of size (32, 32), received (64, 64)")):
        keras_vit.EVA(**SMALL)(_images(64))


def test_export_has_all_three_signatures_and_verifies(tmp_path):
    import tensorflow as tf

    from keras_vit.export.saved_model import saved_model

    model = keras_vit.EVA("vit_small_patch16_rope_mixed_224", depth=1, image_size=32, num_classes=4)
    version = saved_model(model, str(tmp_path / "eva"), verify=True)  # verify: reloaded outputs equal the model's
    assert set(tf.saved_model.load(version).signatures) == {"serving_default", "serve_image_bytes", "features"}
