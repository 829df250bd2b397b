"""keras_vit.BEiT against timm's `Beit`: logits of perturbed random weights, parameter counts, registry, features."""

import keras
import numpy as np
import pytest
import safetensors.torch
import timm
import torch

import keras_vit
from keras_vit.models.beit import BEiT, BEiTConfig, beit_param_count
from tools import timm_beit_variants as beit_generator
from tools.timm_capture import capture

SMALL = dict(depth=2, image_size=64)  # beit_base_patch16_224 at reduced depth and size: a 4x4 patch grid


def perturbed_timm(name, seed=0, **kwargs):
    """A timm model whose every tensor carries noise (zero tables and 0.1 gammas hide no mapping error)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, **kwargs).eval()
    generator = torch.Generator().manual_seed(seed)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model


def save_timm(model, path) -> str:
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def images(size=64, batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, size, size, 3)).astype("float32")


def timm_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """beit_base_patch16_224 (depth 2, 64 px) in timm and in keras_vit, loaded from timm's safetensors."""
    reference = perturbed_timm("beit_base_patch16_224", img_size=64, depth=2)
    path = save_timm(reference, tmp_path_factory.mktemp("beit") / "beit.safetensors")
    return reference, BEiT("beit_base_patch16_224", **SMALL, weights=path), path


def test_logits_equal_timm(pair):
    reference, model, _ = pair
    x = images()
    np.testing.assert_allclose(np.asarray(model(x)), timm_logits(reference, x), atol=1e-4)


@pytest.mark.parametrize(
    "timm_kwargs,arch",
    [
        # absolute + shared bias, no layer scale (timm: init_values=0; create_model drops None), class-token pooling with the final norm (BEiT pretraining layout)
        (
            dict(use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=True, init_values=0,
                 global_pool="token"),
            dict(position_embedding="learned", relative_position_bias=False, shared_relative_position_bias=True,
                 layer_scale_init=None, pooling="token"),
        ),
        # per-block and shared biases together, no q/v bias
        (
            dict(use_shared_rel_pos_bias=True, qkv_bias=False),
            dict(shared_relative_position_bias=True, qkv_bias=False),
        ),
    ],
    ids=["abs_shared_token", "block_and_shared"],
)  # fmt: skip
def test_options_equal_timm(timm_kwargs, arch, tmp_path):
    common = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5)
    reference = perturbed_timm("beit_base_patch16_224", seed=1, **common, **timm_kwargs)
    model = BEiT(image_size=32, patch_size=8, hidden_dim=32, depth=2, num_heads=4, mlp_dim=128, num_classes=5, **arch)
    assert model.count_params() == sum(p.numel() for p in reference.parameters()) == beit_param_count(model.config)
    model.load_pretrained(save_timm(reference, tmp_path / "options.safetensors"))
    x = images(32)
    np.testing.assert_allclose(np.asarray(model(x)), timm_logits(reference, x), atol=1e-4)


def test_beitv2_logits_equal_timm(tmp_path):
    reference = perturbed_timm("beitv2_base_patch16_224", seed=2, img_size=32, patch_size=8, depth=1)
    model = BEiT("beitv2_base_patch16_224", depth=1, image_size=32, patch_size=8)
    assert model.config.layer_scale_init == 1e-5  # BEiT v2's init_values: the perturbation makes the blocks count
    model.load_pretrained(save_timm(reference, tmp_path / "beitv2.safetensors"))
    x = images(32, seed=6)
    np.testing.assert_allclose(np.asarray(model(x)), timm_logits(reference, x), atol=1e-4)


@pytest.mark.parametrize("name", timm.list_models(module="beit"))
def test_parameter_count_equals_timm_meta_count(name):
    with torch.device("meta"):
        expected = sum(p.numel() for p in timm.create_model(name).parameters())
    assert keras_vit.model_spec(name).num_params == expected


@pytest.mark.parametrize(
    "arch",
    [
        dict(),
        dict(position_embedding="learned", shared_relative_position_bias=True, layer_scale_init=None),
        dict(relative_position_bias=False, pooling="token", qkv_bias=False, num_classes=0),
        dict(image_size=(32, 48), fc_norm=False, num_classes=3),
    ],
)
def test_formula_equals_built_count(arch):
    config = dict(dict(image_size=32, patch_size=8, hidden_dim=32, depth=2, num_heads=4, mlp_dim=64), **arch)
    model = BEiT(**config)
    assert model.count_params() == beit_param_count(BEiTConfig(**config))


def test_registry_has_timm_names_and_pretrained_defaults():
    captured = {variant.name: variant for variant in capture("beit")}
    beit_family = [name for name in keras_vit.list_models("beit*") if keras_vit.model_spec(name).family == "beit"]
    assert beit_family == sorted(captured) and len(captured) == 7  # beit3_* are ViTs (vision_transformer.py)
    for name, variant in captured.items():
        spec, cfg = keras_vit.model_spec(name), variant.pretrained
        assert spec.family == "beit" and spec.arch["image_size"] == spec.input_size[0]
        assert (spec.input_size, spec.mean, spec.std) == (cfg["input_size"], cfg["mean"], cfg["std"])
        assert (spec.crop_pct, spec.interpolation, spec.num_classes) == (
            cfg["crop_pct"],
            cfg["interpolation"],
            cfg["num_classes"],
        )
    assert keras_vit.model_spec("beitv2_large_patch16_224").crop_pct == 0.95


def test_generated_table_is_current():
    assert beit_generator.render() == beit_generator.TARGET.read_text(), "run: python -m tools.timm_beit_variants"


def test_config_round_trip_and_old_style_config():
    model = BEiT("beitv2_base_patch16_224", depth=1, image_size=32, num_classes=4)
    clone = BEiT.from_config(model.get_config())
    assert clone.get_config() == model.get_config() and clone.config == model.config
    assert keras_vit.create_model("beit_base_patch16_224", depth=1, image_size=32).variant == "beit_base_patch16_224"


def test_keras_file_round_trip_safe_mode(pair, tmp_path):
    _, model, _ = pair
    model.save(tmp_path / "beit.keras")
    loaded = keras.saving.load_model(tmp_path / "beit.keras", safe_mode=True)
    assert type(loaded) is BEiT
    x = images(seed=3)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_with_image_size_equals_timm_set_input_size(pair):
    reference, model, path = pair
    bigger = model.with_image_size(96)  # 4x4 -> 6x6 patches: every relative table resized
    resized = perturbed_timm("beit_base_patch16_224", img_size=64, depth=2)
    resized.load_state_dict(reference.state_dict())
    resized.set_input_size(img_size=(96, 96))
    x = images(96)
    np.testing.assert_allclose(np.asarray(bigger(x)), timm_logits(resized, x), atol=1e-4)
    same = model.with_image_size(64)
    np.testing.assert_array_equal(np.asarray(same(images())), np.asarray(model(images())))


def test_forward_intermediates_nhwc_equal_timm(pair):
    reference, model, _ = pair
    x = images(seed=4)
    with torch.no_grad():
        final, expected = reference.forward_intermediates(torch.from_numpy(x).permute(0, 3, 1, 2), indices=[0, 1])
    outputs = model.forward_intermediates(x, indices=[0, -1], output_fmt="NHWC")
    assert [tuple(b.shape) for b in outputs["blocks"]] == [(2, 4, 4, 768)] * 2
    for ours, theirs in zip(outputs["blocks"], expected):
        np.testing.assert_allclose(np.asarray(ours), theirs.permute(0, 2, 3, 1).numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(outputs["tokens"]), final.numpy(), atol=1e-4)
    assert len(outputs["attention"]) == 2 and tuple(outputs["attention"][0].shape) == (2, 12, 17, 17)
    last = model.forward_intermediates(x, indices=1)
    assert len(last["blocks"]) == 1 and tuple(last["blocks"][0].shape) == (2, 17, 768)
    with pytest.raises(ValueError, match=r"output_fmt.*Received: output_fmt='NCHW'"):
        model.forward_intermediates(x, output_fmt="NCHW")
    with pytest.raises(ValueError, match=r"Block indices must be ints in \[-2, 2\). Received: indices=\[2\]"):
        model.forward_intermediates(x, indices=[2])


def test_feature_extractor_equals_timm_pre_logits(pair):
    reference, model, _ = pair
    x = images(seed=5)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2)), True)
    np.testing.assert_allclose(np.asarray(model.feature_extractor()(x)), expected.numpy(), atol=1e-4)


def test_recipe_hooks(pair):
    _, model, _ = pair
    groups = model.layer_groups()
    assert len(groups) == 4 and sum(len(g) for g in groups) == len(model.trainable_variables)
    assert any(v.path == "block_1/attn/relative_position_bias_table" for v in groups[2])
    skipped = {v.path for v in model.no_weight_decay_variables()}
    assert {"prefix_tokens/cls_token", "block_0/attn/relative_position_bias_table", "block_0/gamma_1"} <= skipped
    assert "block_0/attn/qkv/kernel" not in skipped and "head/kernel" not in skipped


def test_mixed_precision_and_training_step():
    model = BEiT(image_size=32, patch_size=8, hidden_dim=32, depth=2, num_heads=4, mlp_dim=64, num_classes=3,
                 dtype="mixed_bfloat16", drop_path_rate=0.1)  # fmt: skip
    assert model(images(32)).dtype == "float32"
    rng = np.random.default_rng(7)  # the zero-initialised head would stop every gradient on the first step
    for variable in model.weights:
        variable.assign(variable.numpy() + 0.1 * rng.standard_normal(variable.shape).astype("float32"))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    before = [np.array(v.numpy()) for v in model.trainable_variables]
    model.fit(images(32, batch=4), np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert all(changed), [v.path for v, c in zip(model.trainable_variables, changed) if not c]


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"Unknown BEiT argument\(s\) \['class_token'\]"):
        BEiT(class_token=False)
    with pytest.raises(ValueError, match=r"'vit_tiny_patch16_224' is a 'vit' model, not a BEiT"):
        BEiT("vit_tiny_patch16_224")
    with pytest.raises(ValueError, match=r"position_embedding.*Received: position_embedding='sincos'"):
        BEiT(position_embedding="sincos")
    with pytest.raises(ValueError, match=r"Did you mean: beit_base_patch16_224"):
        keras_vit.create_model("beit_base_patch16_22")
    model = BEiT(image_size=32, patch_size=8, hidden_dim=32, depth=1, num_heads=4, mlp_dim=64)
    with pytest.raises(ValueError, match=r"model.with_image_size\(\(48, 48\)\)"):
        model(images(48))
