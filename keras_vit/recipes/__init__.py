"""Named training recipes and the runner.

keras_vit.recipes.list_recipes()                       # names
keras_vit.recipes.run("digits_vit", epochs=50)         # train, evaluate, write a run folder
parts = keras_vit.recipes.prepare("digits_vit")        # compiled model, data sets, callbacks: fit yourself
keras_vit.recipes.register_recipe(Recipe(name=..., description=..., source=..., ...))
"""

from keras_vit.recipes.config import Recipe
from keras_vit.recipes.registry import get_recipe, list_recipes, register_recipe
from keras_vit.recipes.runner import Prepared, RunResult, evaluate, fit_prepared, prepare, resolve, run

__all__ = [
    "Prepared",
    "Recipe",
    "RunResult",
    "evaluate",
    "fit_prepared",
    "get_recipe",
    "list_recipes",
    "prepare",
    "register_recipe",
    "resolve",
    "run",
]
