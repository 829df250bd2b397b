import dataclasses

import keras
import pytest

from keras_vit.recipes import Recipe, get_recipe, list_recipes, register_recipe

BUILT_IN = ["cifar10_vit_scratch", "deit_pretrain", "digits_vit", "linear_probe", "vit_finetune"]


def test_built_in_recipes_are_documented_with_sources():
    names = list_recipes()
    assert set(BUILT_IN) <= set(names)
    for name in BUILT_IN:
        recipe = get_recipe(name)
        assert recipe.name == name and recipe.description and recipe.source


def test_deit_recipe_holds_the_paper_hyper_parameters():
    deit = get_recipe("deit_pretrain")
    assert (deit.optimizer, deit.lr, deit.base_batch_size, deit.weight_decay) == ("adamw", 5e-4, 512, 0.05)
    assert (deit.epochs, deit.warmup_epochs, deit.label_smoothing, deit.drop_path_rate) == (300, 5, 0.1, 0.1)
    assert (deit.mixup_alpha, deit.cutmix_alpha, deit.switch_prob, deit.random_erasing) == (0.8, 1.0, 0.5, 0.25)
    assert (deit.randaugment_ops, deit.randaugment_magnitude) == (2, 0.9)
    finetune = get_recipe("vit_finetune")
    assert (finetune.optimizer, finetune.momentum, finetune.clip_norm, finetune.weight_decay) == ("sgd", 0.9, 1.0, 0.0)
    assert finetune.image_size == 384 and finetune.requires_init
    assert get_recipe("linear_probe").freeze_backbone


def test_unknown_names_get_suggestions():
    with pytest.raises(ValueError, match=r"Unknown recipe 'digit_vit'\. Did you mean: digits_vit"):
        get_recipe("digit_vit")
    with pytest.raises(ValueError, match=r"'epoch': did you mean epochs"):
        get_recipe("digits_vit").replace(epoch=3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(epochs=0), r"`epochs` must be a positive int\. Received: epochs=0"),
        (dict(lr="fast"), r"`lr` must be of type float\. Received: lr='fast'"),
        (dict(strategy="gpu"), r"Unknown strategy 'gpu'"),
        (dict(label_smoothing=1.0), r"label_smoothing=1\.0"),
        (dict(early_stopping_patience=3), r"needs a validation split"),
        (dict(init_from="weights.npz"), r"'\.keras' model file"),
        (dict(freeze_backbone=True, layer_decay=0.65), r"layer_decay does not apply"),
        (dict(jit_compile="yes"), r"jit_compile='yes'"),
    ],
)
def test_bad_settings_fail_on_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_recipe("digits_vit").replace(**overrides)


def test_other_modules_register_in_one_line():
    @dataclasses.dataclass(frozen=True)
    class TemperatureRecipe(Recipe):
        temperature: float = 2.0

        def loss(self):
            return keras.losses.CategoricalCrossentropy(from_logits=True)

    recipe = register_recipe(TemperatureRecipe(name="test_temperature_recipe", description="d", source="s"))
    assert get_recipe("test_temperature_recipe") is recipe
    assert recipe.replace(temperature=4.0).temperature == 4.0
    with pytest.raises(ValueError, match="needs a description and a source"):
        register_recipe(Recipe(name="undocumented"))
    with pytest.warns(UserWarning, match="registered twice"):
        register_recipe(dataclasses.replace(recipe, epochs=3))
