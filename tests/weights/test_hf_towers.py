"""Hugging Face vision towers (CLIP, SigLIP, DINOv2): key maps, config translation and parity.

Every checkpoint here is written by `transformers` itself (`save_pretrained`,
safetensors) from a tiny random model whose every tensor is perturbed, so no
zero bias or unit LayerScale hides a mapping error. Two references check the
mapping: timm's `VisionTransformer` loading the renamed state dict strictly
must reproduce the `transformers` outputs, and so must keras_vit.
"""

import functools
import json
import re

import numpy as np
import pytest
import timm
import torch
import transformers

from keras_vit.weights import CheckpointError, hf_towers

SIZE, PATCH, WIDTH, HEADS, DEPTH, PROJECTION = 32, 8, 32, 2, 2, 16
SMALL = dict(
    hidden_size=WIDTH,
    num_hidden_layers=DEPTH,
    num_attention_heads=HEADS,
    image_size=SIZE,
    patch_size=PATCH,
)


def _clip_config():
    return transformers.CLIPVisionConfig(**SMALL, intermediate_size=48)


def _siglip_config(**extra):
    return transformers.SiglipVisionConfig(**SMALL, intermediate_size=48, **extra)


def _text():
    return dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)


# name -> (builds the transformers model, timm VisionTransformer kwargs of the same architecture)
TOWERS = {
    "clip": (
        lambda: transformers.CLIPVisionModel(_clip_config()),
        dict(
            pre_norm=True,
            mlp_ratio=1.5,
            act_layer="quick_gelu",
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-5),
        ),
    ),
    "clip_model": (
        lambda: transformers.CLIPModel(
            transformers.CLIPConfig(vision_config=_clip_config(), text_config=_text(), projection_dim=PROJECTION)
        ),
        dict(
            pre_norm=True,
            mlp_ratio=1.5,
            act_layer="quick_gelu",
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-5),
        ),
    ),
    "siglip": (
        lambda: transformers.SiglipVisionModel(_siglip_config()),
        dict(class_token=False, global_pool="map", mlp_ratio=1.5, act_layer="gelu_tanh"),
    ),
    "siglip_model": (
        lambda: transformers.SiglipModel(
            transformers.SiglipConfig(vision_config=_siglip_config(), text_config=_text())
        ),
        dict(class_token=False, global_pool="map", mlp_ratio=1.5, act_layer="gelu_tanh"),
    ),
    "siglip_no_head": (
        lambda: transformers.SiglipVisionModel(_siglip_config(vision_use_head=False)),
        dict(class_token=False, global_pool="avg", fc_norm=False, mlp_ratio=1.5, act_layer="gelu_tanh"),
    ),
    "dinov2": (
        lambda: transformers.Dinov2Model(transformers.Dinov2Config(**SMALL, mlp_ratio=2)),
        dict(init_values=1.0, mlp_ratio=2),
    ),
    "dinov2_registers": (
        lambda: transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(**SMALL, mlp_ratio=2, num_register_tokens=3)
        ),
        dict(init_values=1.0, mlp_ratio=2, reg_tokens=3, no_embed_class=True),
    ),
    "dinov2_swiglu": (  # the giant's SwiGLU FFN: 2/3 of 4 x 32, rounded up to 8 = 88 wide, fc1 2 x 88 = 5.5 x 32
        lambda: transformers.Dinov2Model(transformers.Dinov2Config(**SMALL, use_swiglu_ffn=True)),
        dict(
            init_values=1.0,
            mlp_ratio=5.5,
            mlp_layer=functools.partial(timm.layers.GluMlp, gate_last=False),
            act_layer=torch.nn.SiLU,
        ),
    ),
}


def perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def vision_outputs(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """`last_hidden_state` and `pooler_output` of the vision tower (of an image-text model too)."""
    tower = getattr(model, "vision_model", model)
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2))
    interpolate = {} if "Dinov2" in type(tower).__name__ else dict(interpolate_pos_encoding=True)  # CLIP, SigLIP
    with torch.no_grad():
        out = tower(pixel_values=pixels, **interpolate)
    result = {"last_hidden_state": out.last_hidden_state.numpy()}
    if out.pooler_output is not None:
        result["pooler_output"] = out.pooler_output.numpy()
    if hasattr(model, "visual_projection"):  # CLIPModel's image_embeds
        with torch.no_grad():
            result["image_embeds"] = model.visual_projection(out.pooler_output).numpy()
    return result


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (folder written by save_pretrained, HF outputs on `images`); built once per module."""
    images = np.random.default_rng(0).standard_normal((2, SIZE, SIZE, 3)).astype("float32")
    written = {}
    for seed, (name, (build, _)) in enumerate(TOWERS.items()):
        torch.manual_seed(seed)
        model = perturb(build(), seed)
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder, safe_serialization=True)
        written[name] = (folder, vision_outputs(model, images))
    return images, written


@pytest.mark.parametrize("name", list(TOWERS))
def test_renamed_tower_loads_strictly_into_timm_with_parity(saved, name):
    images, written = saved
    folder, expected = written[name]
    tower = hf_towers.read_tower(str(folder / "model.safetensors"))
    assert tower.family == name.split("_")[0]
    classes = len(tower.state["head.bias"]) if "head.bias" in tower.state else 0  # CLIPModel's projection
    kwargs = dict(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, num_classes=classes)
    reference = timm.models.VisionTransformer(**kwargs, **TOWERS[name][1]).eval()
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tower.state.items()}, strict=True)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2))
    with torch.no_grad():
        if tower.family == "clip":  # transformers' last hidden state comes before post_layernorm
            last = reference.blocks(reference.norm_pre(reference._pos_embed(reference.patch_embed(x))))
        else:
            last = reference.forward_features(x)
        pooled = reference.forward_head(reference.forward_features(x), pre_logits=True)
        logits = reference(x)
    np.testing.assert_allclose(last.numpy(), expected["last_hidden_state"], atol=1e-4, rtol=0)
    if "pooler_output" in expected:
        np.testing.assert_allclose(pooled.numpy(), expected["pooler_output"], atol=1e-4, rtol=0)
    assert ("image_embeds" in expected) == (classes > 0)
    if classes:
        np.testing.assert_allclose(logits.numpy(), expected["image_embeds"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["clip_model", "siglip_model"])
def test_image_text_file_yields_only_the_vision_tower(saved, name):
    folder = saved[1][name][0]
    with pytest.warns(UserWarning, match="vision tower .* left out: .*text_model"):
        tower = hf_towers.read_tower(str(folder / "model.safetensors"))
    assert tower.skipped and all(not k.startswith("vision_model.") for k in tower.skipped)
    assert any(k.startswith("text_model.") for k in tower.skipped) and "logit_scale" in tower.skipped
    assert not any(k.startswith(("text_model.", "vision_model.")) for k in tower.state)


def test_config_translation_of_each_tower(saved):
    folders = {name: folder for name, (folder, _) in saved[1].items()}
    read = {
        name: hf_towers.arch_from_hf_config(json.loads((f / "config.json").read_text())) for name, f in folders.items()
    }
    common = dict(image_size=SIZE, patch_size=PATCH, num_channels=3, hidden_dim=WIDTH, depth=DEPTH, num_heads=HEADS)
    common["num_classes"] = 0
    assert read["clip"] == dict(
        common, mlp_dim=48, layer_norm_epsilon=1e-5, pre_norm=True, patch_bias=False, activation="quick_gelu"
    )
    assert read["clip_model"] == read["clip"]
    assert read["siglip"] == dict(
        common,
        mlp_dim=48,
        layer_norm_epsilon=1e-6,
        activation="gelu_tanh",
        class_token=False,
        pooling="map",
    )
    assert read["siglip_model"] == read["siglip"]
    assert read["siglip_no_head"] == dict(read["siglip"], pooling="avg", fc_norm=False)
    dino = dict(common, mlp_dim=64, layer_norm_epsilon=1e-6, qkv_bias=True, layer_scale_init=1.0)
    assert read["dinov2"] == dict(dino, num_register_tokens=0, pos_embed_prefix=True)
    assert read["dinov2_registers"] == dict(dino, num_register_tokens=3, pos_embed_prefix=False)
    swiglu = dict(dino, num_register_tokens=0, pos_embed_prefix=True, mlp_kind="swiglu_packed", activation="silu")
    assert read["dinov2_swiglu"] == dict(swiglu, mlp_dim=176)  # the packed fc1, as timm's giant (8192)


def test_unsupported_configs_are_refused_by_name():
    with pytest.raises(ValueError, match=r"hidden_act='gelu_fast'"):
        hf_towers.arch_from_hf_config(dict(model_type="clip_vision_model", hidden_act="gelu_fast"))
    with pytest.raises(ValueError, match=r"Received: model_type='beit'"):
        hf_towers.arch_from_hf_config(dict(model_type="beit"))
    assert hf_towers.arch_from_hf_config(dict(model_type="vit"))["hidden_dim"] == 768  # ViT configs as before


def test_config_that_does_not_describe_the_file_is_refused(saved, tmp_path):
    folder = saved[1]["siglip"][0]
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, hidden_size=64, num_attention_heads=4)))
    with pytest.raises(CheckpointError, match=r"hidden_dim: config 64, file 32"):
        hf_towers.read_tower(str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(dict(config, model_type="dinov2")))
    with pytest.raises(CheckpointError, match=r"describes a 'dinov2' model, but .* holds a SigLIP vision tower"):
        hf_towers.read_tower(str(tmp_path / "model.safetensors"))


def test_other_checkpoints_are_not_towers(tmp_path):
    import keras_vit

    path = str(tmp_path / "vit.safetensors")
    keras_vit.weights.save_weights(
        keras_vit.ViT(image_size=16, patch_size=8, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64), path
    )
    assert hf_towers.read_tower(path) is None
    hf = transformers.ViTModel(transformers.ViTConfig(**SMALL, intermediate_size=48))
    hf.save_pretrained(tmp_path / "hf_vit", safe_serialization=True)
    assert hf_towers.read_tower(str(tmp_path / "hf_vit" / "model.safetensors")) is None


# ---- keras_vit against transformers ----------------------------------------------------------------


def keras_tower(folder, **overrides):
    import keras_vit

    arch = keras_vit.weights.arch_from_hf_config(json.loads((folder / "config.json").read_text()))
    return keras_vit.ViT(**dict(arch, **overrides), weights=str(folder))


@pytest.mark.parametrize("name", list(TOWERS))
def test_keras_vit_matches_transformers(saved, name):
    images, written = saved
    folder, expected = written[name][0], dict(written[name][1])
    model = keras_tower(folder)
    outputs = model.forward_intermediates(images)
    last = outputs["blocks"][-1] if name.startswith("clip") else outputs["tokens"]
    np.testing.assert_allclose(np.asarray(last), expected["last_hidden_state"], atol=1e-4, rtol=0)
    if "pooler_output" not in expected:  # SigLIP without its head: no pooled output in transformers
        expected["pooler_output"] = expected["last_hidden_state"].mean(axis=1)  # the average of timm's siglip_gap
    np.testing.assert_allclose(np.asarray(model(images)), expected["pooler_output"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(outputs["pooled"]), expected["pooler_output"], atol=1e-4, rtol=0)


MISMATCH = {  # tower -> a clash the error must name (the checkpoint's value and the model's)
    "clip": r"hidden_dim=32 in the checkpoint, but the model has hidden_dim=192",
    "siglip": r"class_token=False in the checkpoint, but the model has class_token=True",
    "dinov2": r"hidden_dim=32 in the checkpoint, but the model has hidden_dim=192",
    "dinov2_registers": r"num_register_tokens=3 in the checkpoint, but the model has num_register_tokens=0",
}


@pytest.mark.parametrize("name", list(MISMATCH))
def test_mismatching_model_is_refused_naming_both_values(saved, name):
    import keras_vit

    folder = saved[1][name][0]
    model = keras_vit.ViT("vit_tiny_patch16_224")
    before = [np.array(v.numpy()) for v in model.weights[:3]]
    with pytest.raises(CheckpointError, match=re.compile(rf"not the .* vision tower.*{MISMATCH[name]}", re.S)):
        model.load_pretrained(str(folder))
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.weights[:3]))  # nothing was loaded


def test_without_config_the_tensor_shapes_decide(saved, tmp_path):
    import keras_vit

    folder = saved[1]["dinov2"][0]
    (tmp_path / "dino.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"blocks.0.attn.qkv.weight: file \(96, 32\) .* vs model \(64, 192\)"):
        keras_vit.ViT(
            image_size=SIZE,
            patch_size=PATCH,
            hidden_dim=64,
            depth=DEPTH,
            num_heads=HEADS,
            mlp_dim=64,
            layer_scale_init=1.0,
            num_classes=0,
            weights=str(tmp_path / "dino.safetensors"),
        )


@pytest.mark.parametrize(("old", "new"), [(4, 6), (4, 3), (37, 16), (5, 11)])
def test_position_interpolation_is_torch_bicubic(old, new):
    table = np.random.default_rng(old).standard_normal((1, 1 + old * old, 8)).astype("float32")
    grid = torch.from_numpy(table[:, 1:].reshape(1, old, old, 8)).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    tower = hf_towers.Tower("dinov2", "<file>", {"pos_embed": table}, [])

    class Model:  # what the resampler reads of a keras_vit ViT: its pos_embed layer
        layers = [type("Layer", (), dict(name="pos_embed", grid_size=(new, new), num_prefix_tokens=1))()]

    with pytest.warns(UserWarning, match=f"from a {old}x{old} to a {new}x{new} patch grid"):
        assert hf_towers.resample_position_table(Model(), tower) == ((old, old), (new, new))
    resampled = tower.state["pos_embed"]
    np.testing.assert_array_equal(resampled[:, :1], table[:, :1])
    np.testing.assert_allclose(resampled[0, 1:], expected.permute(0, 2, 3, 1).reshape(new * new, 8), atol=1e-5)


@pytest.mark.parametrize("name", ["clip", "siglip", "dinov2", "dinov2_registers"])
@pytest.mark.parametrize("size", [48, 24])
def test_keras_vit_matches_transformers_at_another_image_size(saved, name, size):
    folder = saved[1][name][0]
    images = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype("float32")
    reference = TOWERS[name][0]()
    reference.load_state_dict(type(reference).from_pretrained(folder).state_dict())
    expected = vision_outputs(reference.eval(), images)
    with pytest.warns(UserWarning, match="as transformers interpolates it"):
        model = keras_tower(folder, image_size=size)
    np.testing.assert_allclose(np.asarray(model(images)), expected["pooler_output"], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("timm_name", "registers"), [("vit_small_patch14_dinov2", 0), ("vit_small_patch14_reg4_dinov2", 4)]
)
def test_registered_name_loads_the_transformers_tower(tmp_path, timm_name, registers):
    """`ViT(name, weights=...)`: timm's DINOv2 names take the transformers checkpoints of the same network."""
    import keras_vit

    config = dict(hidden_size=384, num_attention_heads=6, num_hidden_layers=2, image_size=56, patch_size=14)
    if registers:
        hf = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(**config))
    else:
        hf = transformers.Dinov2Model(transformers.Dinov2Config(**config))
    perturb(hf).save_pretrained(tmp_path, safe_serialization=True)
    images = np.random.default_rng(1).standard_normal((1, 56, 56, 3)).astype("float32")
    model = keras_vit.ViT(timm_name, depth=2, image_size=56, weights=str(tmp_path))
    expected = vision_outputs(hf, images)
    np.testing.assert_allclose(np.asarray(model(images)), expected["pooler_output"], atol=1e-4, rtol=0)
    tokens = model.forward_intermediates(images)["tokens"]
    np.testing.assert_allclose(np.asarray(tokens), expected["last_hidden_state"], atol=1e-4, rtol=0)


def test_image_text_file_loads_its_vision_tower_and_reports_the_rest(saved):
    import keras_vit

    images, written = saved
    folder, expected = written["clip_model"]
    arch = keras_vit.weights.arch_from_hf_config(json.loads((folder / "config.json").read_text()))
    model = keras_vit.ViT(**arch)
    with pytest.warns(UserWarning, match="CLIP vision tower"):
        report = model.load_pretrained(str(folder))
    assert report.flavor == "hf" and report.config.endswith("config.json") and report.head == "dropped"
    assert "text_projection.weight" in report.skipped and "logit_scale" in report.skipped
    assert "head.weight" in report.skipped  # visual_projection: no head on a headless model
    assert report.loaded == len(model.weights)
    np.testing.assert_allclose(np.asarray(model(images)), expected["pooler_output"], atol=1e-4, rtol=0)
    embedder = keras_vit.ViT(**dict(arch, num_classes=PROJECTION), weights=str(folder))
    np.testing.assert_allclose(np.asarray(embedder(images)), expected["image_embeds"], atol=1e-4, rtol=0)


def test_registered_siglip_name_names_the_activation_and_loads_with_it(tmp_path):
    """timm's SigLIP names use exact GELU; the transformers checkpoints were trained with tanh-GELU."""
    import keras_vit

    config = _siglip_config()
    config.update(dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, patch_size=16))
    perturb(transformers.SiglipVisionModel(config)).save_pretrained(tmp_path, safe_serialization=True)
    name, kwargs = "vit_base_patch16_siglip_224", dict(depth=DEPTH, image_size=SIZE)
    with pytest.raises(
        CheckpointError, match=r"activation='gelu_tanh' in the checkpoint, but the model has activation='gelu'"
    ):
        keras_vit.ViT(name, **kwargs, weights=str(tmp_path))
    model = keras_vit.ViT(name, **kwargs, activation="gelu_tanh", weights=str(tmp_path))
    images = np.random.default_rng(2).standard_normal((1, SIZE, SIZE, 3)).astype("float32")
    expected = vision_outputs(transformers.SiglipVisionModel.from_pretrained(tmp_path).eval(), images)
    np.testing.assert_allclose(np.asarray(model(images)), expected["pooler_output"], atol=1e-4, rtol=0)
