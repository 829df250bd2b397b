"""The model zoo: published parameter counts, every variant builds, names, plugins."""

import importlib.metadata
import sys

import numpy as np
import pytest

import keras_vit
from keras_vit.models import registry

PUBLISHED_PARAMS = {  # timm / the papers, 1000 classes
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "deit_tiny_distilled_patch16_224": 5_910_800,
    "vit_large_patch16_224": 304_326_632,
}
FORWARD_LIMIT = 25_000_000  # variants under this many parameters (and <= 600 tokens) run a forward pass


@pytest.mark.parametrize("name,count", PUBLISHED_PARAMS.items())
def test_spec_parameter_counts_equal_published(name, count):
    assert keras_vit.model_spec(name).num_params == count


@pytest.mark.parametrize(
    "name", ["vit_tiny_patch16_224", "vit_small_patch16_224", "deit_tiny_distilled_patch16_224", "vit_base_patch16_224"]
)
def test_built_parameter_counts_equal_published(name):
    assert keras_vit.create_model(name).count_params() == PUBLISHED_PARAMS[name]


@pytest.mark.slow
def test_built_large_parameter_count_equals_published():
    assert keras_vit.ViT("vit_large_patch16_224").count_params() == PUBLISHED_PARAMS["vit_large_patch16_224"]


def _tokens(spec):
    arch = spec.arch
    patch = arch["patch_size"]
    return (spec.input_size[0] // patch) * (spec.input_size[1] // patch)


@pytest.mark.parametrize("name", keras_vit.list_models())
def test_every_registered_model_builds(name):
    spec = keras_vit.model_spec(name)
    assert spec.num_params > 0 and spec.name == name
    if spec.family not in ("vit", "deit"):  # sequence models: their own tests build and run them
        if spec.num_params <= FORWARD_LIMIT:
            assert keras_vit.create_model(name).count_params() == spec.num_params
        return
    config = keras_vit.ViTConfig(**spec.arch)  # validates the architecture without building
    assert config.image_size == tuple(spec.input_size)
    if spec.num_params > FORWARD_LIMIT or _tokens(spec) > 600:
        return  # spec-level check only for the big ones
    model = keras_vit.create_model(name)
    assert model.count_params() == spec.num_params
    images = np.random.default_rng(0).random((1, *spec.input_size, config.num_channels), "float32")
    width = spec.arch.get("num_classes", 1000) or spec.arch["hidden_dim"]
    assert tuple(model(images).shape) == (1, width)


def test_names_follow_timm_and_cover_the_family():
    names = set(keras_vit.list_models())
    for size in ("tiny", "small", "base", "large", "huge"):
        for patch in (8, 14, 16, 32):
            assert f"vit_{size}_patch{patch}_224" in names
    assert {
        "vit_base_patch16_384",
        "vit_huge_patch14_224",
        "deit_base_distilled_patch16_384",
        "deit_small_patch16_224",
        "vit_cifar_patch4_32",
    } <= names


def test_list_models_uses_fnmatch_patterns():
    assert keras_vit.list_models("deit_*_distilled_*") == [
        "deit_base_distilled_patch16_224",
        "deit_base_distilled_patch16_384",
        "deit_small_distilled_patch16_224",
        "deit_tiny_distilled_patch16_224",
    ]
    assert keras_vit.list_models("no_such_*") == []


def test_create_model_overrides_defaults():
    model = keras_vit.create_model("vit_tiny_patch16_224", num_classes=7, depth=2)
    assert model.output.shape == (None, 7) and model.config.depth == 2


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"Unknown model name 'vit_bse_patch16_224'.*vit_base_patch16_224"):
        keras_vit.create_model("vit_bse_patch16_224")
    with pytest.raises(ValueError, match="Unknown model name"):
        keras_vit.ViT("resnet50")


def test_register_model_decorator_and_duplicate_warning():
    @keras_vit.register_model(spec=dict(input_size=(16, 16), source="test"))
    def test_registry_tiny(**kwargs):
        return keras_vit.ViT(
            **dict(
                dict(image_size=16, patch_size=8, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32, num_classes=3),
                **kwargs,
            )
        )

    try:
        assert "test_registry_tiny" in keras_vit.list_models("test_*")
        assert keras_vit.create_model("test_registry_tiny").output.shape == (None, 3)
        spec = keras_vit.model_spec("test_registry_tiny")
        assert (
            spec.input_size == (16, 16)
            and spec.num_params == keras_vit.create_model("test_registry_tiny").count_params()
        )
        with pytest.warns(UserWarning, match="registered twice"):
            keras_vit.register_model(test_registry_tiny)
        with pytest.raises(ValueError, match="create_model"):
            keras_vit.ViT("test_registry_tiny")
    finally:
        registry._REGISTRY.pop("test_registry_tiny", None)


PLUGIN_SOURCE = """
import keras_vit

@keras_vit.register_model(spec=dict(family="plugin", input_size=(16, 16)))
def plugin_vit_tiny(**kwargs):
    return keras_vit.ViT(**dict(dict(image_size=16, patch_size=8, hidden_dim=16, depth=1, num_heads=2,
                                     mlp_dim=32, num_classes=4), **kwargs))

def plugin_builder(**kwargs):
    return keras_vit.ViT(**dict(dict(image_size=16, patch_size=4, hidden_dim=16, depth=1, num_heads=2,
                                     mlp_dim=32, num_classes=2), **kwargs))
"""


def test_entry_point_plugins_register_modules_and_functions(tmp_path, monkeypatch):
    (tmp_path / "my_vit_plugin.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [
        importlib.metadata.EntryPoint("my_models", "my_vit_plugin", registry.ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint("plugin_func_vit", "my_vit_plugin:plugin_builder", registry.ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint("broken", "no_such_module_xyz", registry.ENTRY_POINT_GROUP),
    ]

    def fake_entry_points(group=None, **kwargs):
        return [p for p in points if p.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    try:
        with pytest.warns(UserWarning, match="no_such_module_xyz"):
            names = keras_vit.list_models("plugin_*")
        assert names == ["plugin_func_vit", "plugin_vit_tiny"]
        assert keras_vit.model_spec("plugin_vit_tiny").family == "plugin"
        assert keras_vit.create_model("plugin_func_vit").output.shape == (None, 2)
    finally:
        for name in ("plugin_vit_tiny", "plugin_func_vit"):
            registry._REGISTRY.pop(name, None)
        sys.modules.pop("my_vit_plugin", None)
