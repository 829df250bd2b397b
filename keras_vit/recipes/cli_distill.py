"""`keras-vit distill`: train a student (a distilled DeiT by default) from a frozen teacher.

    keras-vit train --run_dir runs/teacher                       # any trained model can teach
    keras-vit distill --teacher runs/teacher/model.keras         # digits_deit_distill, offline
    keras-vit distill --recipe deit_distill --data_dir /data/imagenet --teacher /models/regnet_savedmodel
    keras-vit distill --teacher runs/teacher/model.keras --set lr=1e-3 --set mixup_alpha=0.2   # any setting

Writes the usual run folder (model.keras = the student, metrics.json, history,
learning curve) and prints it.
"""

from __future__ import annotations

from absl import flags

FLAGS = flags.FLAGS


def _define(kind: str, name: str, default, help_text: str, **kwargs) -> None:
    """Defines a flag unless another command module in this process already did (absl flags are global)."""
    if name not in FLAGS:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text, **kwargs)


_define("string", "recipe", None, "Recipe name (keras_vit.recipes.list_recipes()).")
_define("string", "teacher", None, "Teacher: a .keras model or a SavedModel directory (frozen).")
_define("string", "mode", None, "Distillation: hard or soft (default: the recipe's).")
_define("float", "alpha", None, "Soft distillation: weight of the teacher term (lambda).")
_define("float", "temperature", None, "Soft distillation: softmax temperature.")
_define("integer", "epochs", None, "Epochs (default: the recipe's).")
_define("integer", "batch_size", None, "Global batch size (default: the recipe's).")
_define("string", "strategy", None, "auto|default|one_device|mirrored|tpu (default: the recipe's).")
_define("string", "data_dir", None, "Local copy of the data set (required for image folders).")
_define("string", "run_dir", None, "Run folder (default: runs/<recipe>-<time>).")
_define("multi_string", "set", [], "Any recipe setting as key=value (Python literal), repeatable.")

DEFAULT_RECIPE = "digits_deit_distill"


def overrides_from_flags(recipe) -> dict:
    """The recipe settings given on the command line: `--set key=value` pairs, then the named flags."""
    from keras_vit.recipes.config import parse_settings

    pairs = {
        "teacher": FLAGS.teacher,
        "distill_mode": FLAGS.mode,
        "distill_alpha": FLAGS.alpha,
        "distill_temperature": FLAGS.temperature,
        "epochs": FLAGS.epochs,
        "batch_size": FLAGS.batch_size,
        "strategy": FLAGS.strategy,
        "data_dir": FLAGS.data_dir,
        "run_dir": FLAGS.run_dir,
    }
    return {**parse_settings(FLAGS.set, recipe), **{key: value for key, value in pairs.items() if value is not None}}


def main(argv: list[str]) -> None:
    """Runs a distillation recipe; ValueErrors become clean CLI errors (exit 2)."""
    if len(argv) > 1:
        raise ValueError(f"keras-vit distill takes only --flags. Received extra arguments: {argv[1:]}")
    from keras_vit import recipes
    from keras_vit.recipes.distill_adversarial import DistillRecipe

    name = FLAGS.recipe or DEFAULT_RECIPE
    recipe = recipes.get_recipe(name)
    if not isinstance(recipe, DistillRecipe):
        distill = [n for n in recipes.list_recipes() if isinstance(recipes.get_recipe(n), DistillRecipe)]
        raise ValueError(
            f"Recipe {name!r} is not a distillation recipe; use one of {distill}. Received: --recipe={name}"
        )
    overrides = overrides_from_flags(recipe)
    from keras_vit.models.cli import require_image_model

    require_image_model(overrides.get("model", recipe.model), "distill")
    if "teacher" not in overrides:
        raise ValueError(
            "keras-vit distill needs --teacher: a .keras model (e.g. runs/<run>/model.keras from "
            "`keras-vit train`) or a SavedModel directory."
        )
    result = recipes.run(recipe, **overrides)
    print(f"run folder: {result.run_dir}")
    print(f"test accuracy: {result.metrics.get('test_accuracy', float('nan')):.4f}")
