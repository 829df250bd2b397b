"""BEiT checkpoints: Hugging Face BeitModel/BeitForImageClassification folders against `transformers`, timm files of
another grid, size or family, all written here in the publishers' formats (nothing is downloaded)."""

import json
import warnings

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
import transformers

import keras_vit
from keras_vit.models.beit import BEiT
from keras_vit.weights import CheckpointError
from keras_vit.weights.beit_hf import arch_from_hf_beit_config

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
             patch_size=8)  # fmt: skip


def perturb(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def hf_folder(tmp_path, model_class, seed=0, **config):
    torch.manual_seed(seed)
    reference = perturb(model_class(transformers.BeitConfig(**dict(SMALL, **config))), seed)
    folder = tmp_path / "hf"
    reference.save_pretrained(folder)
    return reference, folder


def images(size=32, seed=0):
    return np.random.default_rng(seed).standard_normal((2, size, size, 3)).astype("float32")


def pixels(x):
    return torch.from_numpy(x).permute(0, 3, 1, 2)


def model_for(folder, **overrides):
    """The BEiT the folder's config.json describes (arch_from_hf_beit_config), then its weights."""
    arch = arch_from_hf_beit_config(json.loads((folder / "config.json").read_text()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the config's LayerNorm epsilon is adopted with a warning
        return BEiT(**dict(arch, **overrides), weights=str(folder))


@pytest.mark.parametrize(
    "config",
    [
        dict(use_relative_position_bias=True, layer_scale_init_value=0.1, use_mean_pooling=True),
        dict(use_shared_relative_position_bias=True, use_absolute_position_embeddings=True, use_mean_pooling=False,
             layer_scale_init_value=0.0, use_mask_token=True),
    ],
    ids=["block_bias_mean_pool", "shared_bias_abs_cls_pool"],
)  # fmt: skip
def test_beit_model_hidden_state_and_pooler_equal_transformers(config, tmp_path):
    reference, folder = hf_folder(tmp_path, transformers.BeitModel, **config)
    model = model_for(folder, num_classes=0)
    x = images()
    with torch.no_grad():
        expected = reference(pixel_values=pixels(x))
    outputs = model.forward_intermediates(x)
    np.testing.assert_allclose(np.asarray(outputs["tokens"]), expected.last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(model(x)), expected.pooler_output.numpy(), atol=1e-4)
    assert model.config.layer_norm_epsilon == 1e-12  # BeitConfig's, read from config.json


def test_classifier_logits_equal_transformers(tmp_path):
    reference, folder = hf_folder(
        tmp_path, transformers.BeitForImageClassification, seed=1, use_relative_position_bias=True, num_labels=5
    )
    model = model_for(folder)
    assert model.config.num_classes == 5
    report = model.load_pretrained(str(folder / "model.safetensors"))
    assert (report.flavor, report.head, report.config) == ("hf", "loaded", str(folder / "config.json"))
    x = images(seed=2)
    with torch.no_grad():
        expected = reference(pixel_values=pixels(x)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-4)


def test_model_contradicting_config_json_is_refused(tmp_path):
    _, folder = hf_folder(tmp_path, transformers.BeitModel, use_relative_position_bias=True)
    model = BEiT(image_size=32, patch_size=8, hidden_dim=32, depth=3, num_heads=4, mlp_dim=64, num_classes=0)
    before = [np.array(v.numpy()) for v in model.weights]
    with pytest.raises(CheckpointError, match=r"depth=2 in config.json, but the model has depth=3"):
        model.load_pretrained(str(folder))
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.weights)), "nothing may be written"


def test_timm_file_of_another_grid_has_its_tables_resized_as_timm(tmp_path):
    torch.manual_seed(3)
    small = perturb(timm.create_model("beit_base_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2,
                                      num_heads=4, num_classes=3), 3)  # fmt: skip
    path = tmp_path / "beit_32.safetensors"
    safetensors.torch.save_file(small.state_dict(), str(path))
    # timm's own loading of the 32 px file into a 48 px model (its checkpoint filter resizes every table)
    big = timm.create_model(
        "beit_base_patch16_224", img_size=48, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=3
    ).eval()
    from timm.models.beit import checkpoint_filter_fn

    big.load_state_dict(checkpoint_filter_fn(dict(small.state_dict()), big))
    model = BEiT(image_size=48, patch_size=8, hidden_dim=32, depth=2, num_heads=4, mlp_dim=128, num_classes=3)
    report = model.load_pretrained(str(path))
    assert report.resampled == ((4, 4), (6, 6))
    x = images(48, seed=4)
    with torch.no_grad():
        expected = big(pixels(x)).numpy()
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-4)


def test_checkpoint_of_another_size_or_family_names_expected_and_found(tmp_path):
    beit_file = tmp_path / "beit.safetensors"
    other = timm.create_model("beit_base_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4)
    safetensors.torch.save_file(other.state_dict(), str(beit_file))
    model = BEiT(image_size=32, patch_size=8, hidden_dim=32, depth=2, num_heads=4, mlp_dim=128)
    with pytest.raises(CheckpointError, match=r"Expected a checkpoint of BEiT, width 32, patch 8x8, depth 2.*"
                                              r"the file holds a BEiT, width 64, patch 8x8, depth 3"):  # fmt: skip
        model.load_pretrained(str(beit_file))
    vit_file = tmp_path / "vit.safetensors"
    vit = timm.create_model("vit_base_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    safetensors.torch.save_file(vit.state_dict(), str(vit_file))
    with pytest.raises(CheckpointError, match=r"the file holds a non-BEiT \(ViT-like\).*\n.*does not fit") as error:
        model.load_pretrained(str(vit_file))
    assert "blocks.0.attn.q_bias" in str(error.value) and "pos_embed" in str(error.value)


def test_keras_weights_file_round_trips(tmp_path):
    model = BEiT(image_size=32, patch_size=8, hidden_dim=32, depth=1, num_heads=4, mlp_dim=64, num_classes=3)
    for variable in model.weights:
        variable.assign(np.random.default_rng(5).standard_normal(variable.shape).astype("float32"))
    model.save_weights(tmp_path / "beit.weights.h5")
    clone = BEiT(image_size=32, patch_size=8, hidden_dim=32, depth=1, num_heads=4, mlp_dim=64, num_classes=3)
    assert clone.load_pretrained(str(tmp_path / "beit.weights.h5")).flavor == "keras"
    np.testing.assert_array_equal(np.asarray(clone(images())), np.asarray(model(images())))


def test_catalogue_lists_timm_beit_tags():
    names = [n for n in keras_vit.weights.list_checkpoints("beit*") if not n.startswith("beit3")]  # beit3: ViTs
    assert len(names) == 13 and "beitv2_base_patch16_224.in1k_ft_in22k_in1k" in names
    entry = keras_vit.weights.checkpoint_info("beit_large_patch16_224.in22k_ft_in22k")
    assert entry.arch == {"num_classes": 21841} and entry.url.endswith(
        "timm/" + entry.name + "/resolve/main/model.safetensors"
    )


def test_saved_safetensors_load_into_timm_with_the_same_logits(tmp_path):
    model = BEiT(image_size=32, patch_size=8, hidden_dim=32, depth=2, num_heads=4, mlp_dim=128, num_classes=3,
                 shared_relative_position_bias=True)  # fmt: skip
    for variable in model.weights:
        variable.assign(0.2 * np.random.default_rng(8).standard_normal(variable.shape).astype("float32"))
    path = keras_vit.weights.save_weights(model, str(tmp_path / "beit.safetensors"))
    reference = timm.create_model("beit_base_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2,
                                  num_heads=4, num_classes=3, use_shared_rel_pos_bias=True).eval()  # fmt: skip
    reference.load_state_dict(safetensors.torch.load_file(path))  # strict: every key and shape
    x = images(seed=9)
    with torch.no_grad():
        expected = reference(pixels(x)).numpy()
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-4)


def test_head_of_another_class_count_is_replaced_and_the_backbone_loaded(tmp_path):
    reference = perturb(timm.create_model("beit_base_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1,
                                          num_heads=4, num_classes=5), 10)  # fmt: skip
    path = tmp_path / "beit5.safetensors"
    safetensors.torch.save_file(reference.state_dict(), str(path))
    model = BEiT(image_size=32, patch_size=8, hidden_dim=32, depth=1, num_heads=4, mlp_dim=128, num_classes=3)
    with pytest.warns(UserWarning, match=r"Classifier head not loaded.*head.weight \(5, 32\) vs \(3, 32\)"):
        report = model.load_pretrained(str(path))
    assert report.head == "replaced" and report.skipped == ["head.bias", "head.weight"]
    x = images(seed=11)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(pixels(x)), pre_logits=True).numpy()
    np.testing.assert_allclose(np.asarray(model.feature_extractor()(x)), expected, atol=1e-4)
