"""timm's vision_transformer.py and deit.py names: the generated table, parameter counts and parity with timm.

Parity runs on perturbed random weights (every tensor noised, so zero heads or
1e-5 LayerScales hide no mapping error), saved as timm publishes them
(`state_dict()` to safetensors), at depth 2 and a 4x4 patch grid to stay fast.
"""

import timm  # noqa: I001  (torch/timm before TensorFlow; see tests/conftest.py)
import dataclasses
import subprocess

import keras
import numpy as np
import pytest
import torch

import keras_vit
from keras_vit.models import registry, variants
from keras_vit.models.timm_vit_variants import TIMM_VIT_VARIANTS
from keras_vit.layers.embeddings import resample_patch_kernel
from keras_vit.models.vit import ViTConfig, missing_layers, vit_param_count
from tests.parity.vit_parity_utils import TOLERANCE, images, max_diff, randomize_, save_state, timm_forward, to_torch
from tools import timm_vit_variants

HAND_WRITTEN = {
    spec.name: spec
    for spec in variants._vit_specs()
    + variants._deit_specs()
    + variants._register_token_specs()
    + variants._small_image_specs()
}
REGISTERED = set(keras_vit.list_models())
# One registered name per sub-family, and every tiny/small one.
SUB_FAMILIES = [
    "vit_base_patch16_clip_224",
    "vit_small_patch14_dinov2",
    "deit3_small_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "flexivit_small",
    "vit_medium_patch16_gap_256",
    "vit_betwixt_patch16_reg4_gap_256",
    "vit_base_patch16_radio_v3",
    "eva_large_patch14_196",
    "vit_base_patch16_siglip_224",  # MAP head
    "vit_so150m_patch16_reg4_map_256",  # MAP head over patch tokens only (registers dropped)
    "vit_base_patch16_siglip_gap_224",  # SigLIP 2 style: tanh GELU, average pool
    "vit_base_patch16_clip_quickgelu_224",  # QuickGELU
    "aimv2_large_patch14_224",  # RMSNorm, SwiGLU, no biases, norm after the patch embedding
    "vit_base_patch14_reg1_tipsv2",  # TIPS: one register, LayerScale 1.0
    "beit3_base_patch16_224",  # norms inside attention and MLP
    "vit_base_patch16_xp_224",  # parallel scaling block, RMSNorm, qk-norm
    "vit_pwee_patch16_reg1_gap_256",  # parallel scaling block with LayerScale
    "vit_dpwee_patch16_reg1_gap_256",  # differential parallel scaling block
    "vit_dwee_patch16_reg1_gap_256",  # differential attention
    "vit_base_patch16_rpn_224",  # residual post-norm block
    "vit_base_patch16_18x2_224",  # parallel things block
]
SLOW_PARITY = ["vit_giant_patch14_dinov2"]  # packed SwiGLU (GluMlp) at width 1536
SMALL = sorted(n for n in TIMM_VIT_VARIANTS if ("tiny" in n or "small" in n) and n in REGISTERED)
PARITY_NAMES = sorted(set(SUB_FAMILIES) | set(SMALL))


@pytest.mark.parametrize(
    "target,render",
    [
        (timm_vit_variants.TARGET, timm_vit_variants.render),
        (timm_vit_variants.PRETRAINED_TARGET, timm_vit_variants.render_pretrained),
    ],
)
def test_generated_tables_are_current(target, render):
    """The package's tables are what `python -m tools.timm_vit_variants --write` writes from the installed timm."""
    formatted = subprocess.run(
        ["ruff", "format", "--stdin-filename", str(target), "-"],
        input=render(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert formatted == target.read_text()


def test_table_holds_every_timm_name():
    expected = [n for n in timm.list_models(module="vision_transformer") if not n.startswith("test_")]
    expected += [n for n in timm.list_models(module="deit") if not n.startswith("test_")]
    assert sorted(TIMM_VIT_VARIANTS) == sorted(expected)
    assert len(TIMM_VIT_VARIANTS) == 175


@pytest.mark.slow
def test_parameter_count_formula_equals_timm_for_every_name():
    """`vit_param_count` of each generated architecture = timm's count, built on the meta device (no memory)."""
    wrong = {}
    for name, row in TIMM_VIT_VARIANTS.items():
        with torch.device("meta"):
            reference = sum(p.numel() for p in timm.create_model(name).parameters())
        ours = vit_param_count(ViTConfig(**row["arch"]))
        if ours != reference:
            wrong[name] = (ours, reference)
    assert not wrong


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "vit_base_patch16_clip_224", "deit3_small_patch16_224"])
def test_parameter_count_formula_equals_timm(name):
    with torch.device("meta"):
        reference = sum(p.numel() for p in timm.create_model(name).parameters())
    assert keras_vit.model_spec(name).num_params == reference


def test_every_name_is_registered_or_waits_for_named_layers():
    for name, row in TIMM_VIT_VARIANTS.items():
        assert (name in REGISTERED) != bool(missing_layers(ViTConfig(**row["arch"]))), name


def test_timm_names_carry_timm_pretrained_defaults():
    for name, row in TIMM_VIT_VARIANTS.items():
        if name not in REGISTERED or name in HAND_WRITTEN:
            continue
        spec = keras_vit.model_spec(name)
        assert spec.arch == row["arch"] and spec.family == row["family"]
        for field in ("input_size", "mean", "std", "crop_pct", "interpolation", "num_classes", "license"):
            assert getattr(spec, field) == row[field], (name, field)
    spec = keras_vit.model_spec("vit_base_patch16_clip_224")
    assert spec.mean == (0.48145466, 0.4578275, 0.40821073) and spec.crop_pct == 0.95 and spec.family == "clip"


def test_names_registered_before_keep_their_specs():
    """The 52 earlier names keep their configs; the generated table agrees on the architecture of all but three."""
    differing = set()
    for name, spec in HAND_WRITTEN.items():
        assert registry._entry(name).spec == dataclasses.replace(spec, num_params=registry._entry(name).spec.num_params)
        if name in TIMM_VIT_VARIANTS and _same_model(TIMM_VIT_VARIANTS[name]["arch"]) != _same_model(spec.arch):
            differing.add(name)
    # timm's default tags of these three are headless (in21k); keras_vit's specs have kept 1000 classes.
    assert differing == {"vit_huge_patch14_224", "vit_large_patch32_224", "vit_small_patch8_224"}


def _same_model(arch: dict) -> ViTConfig:
    """The config with "gap" written as "avg", the name it has now (both build the same model)."""
    config = ViTConfig(**arch)
    return dataclasses.replace(config, pooling="avg" if config.pooling == "gap" else config.pooling)


def _reduced(name: str) -> tuple[int, dict, dict]:
    arch = TIMM_VIT_VARIANTS[name]["arch"] if name in TIMM_VIT_VARIANTS else HAND_WRITTEN[name].arch
    size = 4 * arch["patch_size"]
    return size, dict(depth=2, num_classes=7), dict(depth=2, num_classes=7)


@pytest.mark.parametrize("name", PARITY_NAMES + [pytest.param(name, marks=pytest.mark.slow) for name in SLOW_PARITY])
def test_logits_match_timm(name, tmp_path):
    size, timm_overrides, ours_overrides = _reduced(name)
    reference = randomize_(timm.create_model(name, pretrained=False, img_size=size, **timm_overrides), seed=1)
    path = save_state(reference, tmp_path / f"{name}.safetensors")
    ours = keras_vit.create_model(name, image_size=size, weights=path, **ours_overrides)
    x = images(2, size)
    ref_logits, ref_blocks = timm_forward(reference, x)
    assert max_diff(ours(x), ref_logits) <= TOLERANCE
    blocks = ours.forward_intermediates(x)["blocks"]
    for ours_block, ref_block in zip(blocks, ref_blocks, strict=True):  # float32 round-off grows with the values
        assert max_diff(ours_block, ref_block) <= TOLERANCE * max(1.0, float(np.abs(ref_block).max()))
    assert np.abs(ref_logits).max() > 0.1


@pytest.mark.parametrize("old,new", [((16, 16), (8, 8)), ((16, 16), (24, 24)), ((14, 14), (16, 12))])
def test_patch_kernel_resample_equals_timm(old, new):
    from timm.layers import resample_patch_embed

    kernel = np.random.default_rng(0).standard_normal((5, 3, *old)).astype("float32")  # PyTorch layout
    expected = resample_patch_embed(torch.from_numpy(kernel), list(new)).numpy()
    ours = resample_patch_kernel(kernel.transpose(2, 3, 1, 0), new).transpose(3, 2, 0, 1)
    assert max_diff(ours, expected) <= 1e-5


def test_with_patch_size_matches_timm_flexivit(tmp_path):
    """FlexiViT at patch 8: timm resamples the checkpoint on load (checkpoint_filter_fn), keras_vit with_patch_size."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    size, small = 64, dict(depth=2, num_classes=7)
    reference16 = randomize_(timm.create_model("flexivit_small", img_size=size, **small), seed=2)
    ours16 = keras_vit.create_model(
        "flexivit_small", image_size=size, weights=save_state(reference16, tmp_path / "f.safetensors"), **small
    )
    reference8 = timm.create_model("flexivit_small", img_size=size, patch_size=8, **small).eval()
    reference8.load_state_dict(checkpoint_filter_fn(reference16.state_dict(), reference8))
    ours8 = ours16.with_patch_size(8)
    assert ours8.config.patch_size == (8, 8) and ours8.config.grid_size == (8, 8)
    x = images(2, size)
    assert max_diff(ours8(x), timm_forward(reference8, x)[0]) <= TOLERANCE


OPTION_SETS = {
    "clip": dict(pre_norm=True, patch_bias=False, layer_norm_epsilon=1e-5, activation="quick_gelu"),
    "siglip_map": dict(class_token=False, pooling="map", activation="gelu_tanh", num_register_tokens=2),
    "aimv2": dict(
        class_token=False,
        pooling="avg",
        fc_norm=False,
        norm_layer="rms",
        embed_norm=True,
        mlp_kind="swiglu",
        activation="silu",
        qkv_bias=False,
        proj_bias=False,
    ),
    "parallel": dict(block_kind="parallel_scaling", qk_norm=True, norm_layer="rms", layer_scale_init=1e-5),
}
TINY_ARCH = dict(image_size=32, patch_size=8, hidden_dim=32, depth=2, num_heads=4, mlp_dim=64, num_classes=3)


@pytest.mark.parametrize("options", sorted(OPTION_SETS))
def test_new_options_round_trip_through_keras_files_and_resize(options, tmp_path):
    model = keras_vit.ViT(**TINY_ARCH, **OPTION_SETS[options])
    for variable in model.weights:  # nothing left at its constant initial value
        variable.assign(np.random.default_rng(0).normal(size=variable.shape).astype("float32") * 0.1 + 0.5)
    x = images(2, 32)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.config == model.config
    assert max_diff(loaded(x), model(x)) <= 1e-6
    assert model.count_params() == vit_param_count(model.config)
    same = model.with_image_size(32)
    assert max_diff(same(x), model(x)) <= 1e-6
    bigger = model.with_image_size(48)
    assert bigger(images(1, 48)).shape == (1, 3)


def test_configs_saved_before_the_new_options_load_as_before():
    """A ViT config written by the previous release (no new fields, pooling "gap") builds the same model."""
    old = dict(
        variant=None,
        name="old",
        image_size=[32, 32],
        patch_size=[8, 8],
        num_channels=3,
        hidden_dim=32,
        depth=2,
        num_heads=4,
        mlp_dim=64,
        qkv_bias=True,
        qk_norm=False,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_scale_init=None,
        class_token=False,
        distillation_token=False,
        num_register_tokens=0,
        position_embedding="learned",
        pos_embed_prefix=False,
        pooling="gap",
        fc_norm=None,
        representation_size=None,
        num_classes=3,
        layer_norm_epsilon=1e-6,
    )
    model = keras_vit.ViT.from_config(old)
    assert model.config.pooling == "gap" and model.config.uses_fc_norm and not model.config.pre_norm
    names = [layer.name for layer in model.layers]
    assert "fc_norm" in names and "norm" not in names and "norm_pre" not in names
    assert model.count_params() == vit_param_count(
        ViTConfig(**{k: v for k, v in old.items() if k not in ("variant", "name")})
    )


@pytest.mark.parametrize(
    "name,indices", [("vit_small_patch14_reg4_dinov2", [0, -1]), ("deit_tiny_distilled_patch16_224", 1)]
)
def test_nhwc_feature_maps_equal_timm_forward_intermediates(name, indices, tmp_path):
    """Patch tokens of chosen blocks as (batch, rows, columns, dim) maps, prefix and register tokens removed."""
    size, timm_overrides, ours_overrides = _reduced(name)
    reference = randomize_(timm.create_model(name, pretrained=False, img_size=size, **timm_overrides), seed=4)
    ours = keras_vit.create_model(
        name, image_size=size, weights=save_state(reference, tmp_path / "m.safetensors"), **ours_overrides
    )
    x = images(2, size)
    with torch.no_grad():
        expected = reference.forward_intermediates(
            to_torch(x), indices=indices, output_fmt="NCHW", intermediates_only=True
        )  # timm's VisionTransformer gives NCHW maps; the same values as NHWC
    expected = [ref_map.permute(0, 2, 3, 1) for ref_map in expected]
    features = ours.forward_intermediates(x, indices=indices, output_fmt="NHWC")["blocks"]
    assert len(features) == len(expected)
    for ours_map, ref_map in zip(features, expected, strict=True):
        assert tuple(ours_map.shape) == (2, 4, 4, ours.config.hidden_dim)
        assert max_diff(ours_map, ref_map.numpy()) <= TOLERANCE * max(1.0, float(ref_map.abs().max()))
    with pytest.raises(ValueError, match=r"Received: indices=\[5\]"):
        ours.forward_intermediates(x, indices=[5])


@pytest.mark.parametrize("name", ["vit_base_patch16_clip_224", "vit_base_patch16_siglip_224"])
def test_architecture_read_from_a_timm_file(name, tmp_path):
    """`weights.infer_arch` reads CLIP's pre-norm and missing patch bias, SigLIP's attention pool, from the tensors."""
    from keras_vit.weights import infer_arch

    reference = randomize_(timm.create_model(name, img_size=64, depth=2, num_classes=5), seed=5)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    arch = infer_arch(state, layer_norm_epsilon=1e-5 if "clip" in name else 1e-6)
    expected = ViTConfig(**dict(TIMM_VIT_VARIANTS[name]["arch"], image_size=64, depth=2, num_classes=5))
    for field in ("pre_norm", "patch_bias", "pooling", "class_token", "hidden_dim", "mlp_dim", "depth"):
        assert arch[field] == getattr(expected, field), field
    assert vit_param_count(ViTConfig(**arch)) == vit_param_count(expected)
    ours = keras_vit.ViT(**arch, weights=save_state(reference, tmp_path / "m.safetensors"))
    x = images(1, 64)
    expected_logits = timm_forward(reference, x)[0]  # float32 round-off grows with the logits (here up to ~60)
    assert max_diff(ours(x), expected_logits) <= TOLERANCE * max(1.0, float(np.abs(expected_logits).max()))
