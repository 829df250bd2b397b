"""Every built-in variant enters the zoo the same way: a family table in models/variants.py and `register_variants`."""

import ast
import dataclasses
import pathlib

import pytest

import keras_vit
from keras_vit.models import registry, variants
from keras_vit.models.beit import BEiT, BEiTConfig, beit_param_count
from keras_vit.models.eva import EVA, EVA_FAMILIES, eva_config, eva_param_count
from keras_vit.models.mae import MAE
from keras_vit.models.transformer import Transformer, TransformerConfig, transformer_param_count
from keras_vit.models.vit import DeiT, ViT, ViTConfig, vit_param_count

PACKAGE_DIR = pathlib.Path(keras_vit.__file__).parent
VIT_FAMILIES = ("vit", "deit", "deit3", "clip", "siglip", "dinov2", "aimv2", "flexivit", "beit3")
FAMILY_CLASSES = {"transformer": (Transformer,), "mae": (MAE,), **{family: (ViT, DeiT) for family in VIT_FAMILIES}}
FAMILY_CLASSES["beit"] = (BEiT,)
FAMILY_CLASSES.update({family: (EVA,) for family in EVA_FAMILIES})


def _count(spec):
    if spec.family == "transformer":
        return transformer_param_count(TransformerConfig(**spec.arch))
    if spec.family == "mae":  # checked against transformers' ViTMAEForPreTraining in tests/models/test_mae.py
        return variants._mae_param_count(spec.arch)
    if spec.family in EVA_FAMILIES:  # equal to timm's count: tests/models/test_eva_variants.py
        return eva_param_count(eva_config(spec.arch))
    if spec.family == "beit":  # checked against timm's meta-device counts in tests/models/test_beit.py
        return beit_param_count(BEiTConfig(**spec.arch))
    return vit_param_count(ViTConfig(**spec.arch))


@pytest.mark.parametrize("name", keras_vit.list_models())
def test_every_registered_name_is_a_variant_of_its_family_class(name):
    entry = registry._entry(name)
    assert isinstance(entry.builder, registry.VariantBuilder), f"{name} is registered by {entry.builder!r}"
    assert entry.builder.name == entry.spec.name == name
    assert entry.builder.model_class in FAMILY_CLASSES[entry.spec.family]
    assert (entry.builder.model_class is DeiT) == bool(entry.spec.arch.get("distillation_token"))
    assert entry.spec.arch, f"{name} has no architecture arguments in its spec"
    assert entry.spec.num_params == _count(entry.spec)


def test_transformer_table_is_the_registered_transformer_family():
    assert set(variants.TRANSFORMER_VARIANTS) == set(keras_vit.list_models("transformer*"))
    for name, arch in variants.TRANSFORMER_VARIANTS.items():
        assert keras_vit.model_spec(name).arch == arch


@pytest.mark.parametrize("name", ["vit_digits_patch2_8", "transformer_tiny", "transformer_encoder_tiny"])
def test_create_model_equals_the_class_built_from_the_name(name):
    """The registry adds nothing of its own: create_model(name) is model_class(name)."""
    builder = registry._entry(name).builder
    made, direct = keras_vit.create_model(name), builder.model_class(name)
    assert type(made) is builder.model_class and made.variant == name
    assert made.get_config() == direct.get_config()
    assert made.count_params() == keras_vit.model_spec(name).num_params


def test_only_variants_module_registers_built_in_variants():
    callers = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                "register_variants",
                "register_model",
                "_add",
            ):
                callers.append(path.relative_to(PACKAGE_DIR).as_posix())
    assert set(callers) == {"models/variants.py", "models/registry.py"}
    assert callers.count("models/variants.py") == 5  # one call per family: ViT/DeiT, Transformer, MAE, EVA and BEiT


def test_register_variants_fills_the_parameter_count(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {})
    spec = registry.ModelSpec(name="toy_variant", family="toy", arch=dict(width=3))
    registry.register_variants([spec], model_class_for=lambda s: dict, param_count=lambda arch: 7 * arch["width"])
    entry = registry._REGISTRY["toy_variant"]
    assert entry.spec == dataclasses.replace(spec, num_params=21)
    assert entry.builder == registry.VariantBuilder(dict, "toy_variant")
