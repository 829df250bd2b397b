"""The recipe registry: named `Recipe`s that any module can add to with one call.

from keras_vit.recipes import Recipe, register_recipe
register_recipe(Recipe(name="my_recipe", description="...", source="...", epochs=30))
"""

from __future__ import annotations

import difflib
import warnings

from keras_vit.recipes.config import Recipe

_RECIPES: dict[str, Recipe] = {}
# Modules that register recipes on import (kept out of the package import so it stays light).
_PROVIDERS = ("keras_vit.recipes.library",)
_EXTRA_PROVIDERS = ("keras_vit.recipes.distill_adversarial",)  # optional: skipped when absent
_loaded = False


def register_recipe(recipe: Recipe) -> Recipe:
    """Registers `recipe` under `recipe.name`; registering a taken name warns and replaces it.

    Returns:
        The recipe, unchanged.
    """
    if not isinstance(recipe, Recipe):
        raise ValueError(f"register_recipe takes a keras_vit.recipes.Recipe. Received: {type(recipe).__name__}")
    if not recipe.name or recipe.name == "custom":
        raise ValueError(f"A registered recipe needs its own name. Received: name={recipe.name!r}")
    if not recipe.description or not recipe.source:
        raise ValueError(f"Recipe {recipe.name!r} needs a description and a source (paper or code it follows).")
    if recipe.name in _RECIPES and _RECIPES[recipe.name] != recipe:
        warnings.warn(
            f"Recipe {recipe.name!r} is registered twice; the later registration replaces the earlier.", stacklevel=2
        )
    _RECIPES[recipe.name] = recipe
    return recipe


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in _PROVIDERS:
        importlib.import_module(module)
    for module in _EXTRA_PROVIDERS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # a real import error inside the module: show it
                raise


def get_recipe(name: str) -> Recipe:
    """The registered recipe `name`; unknown names fail with the closest registered ones."""
    _load()
    if name not in _RECIPES:
        close = difflib.get_close_matches(str(name), _RECIPES, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown recipe {name!r}.{hint} Registered recipes: {', '.join(sorted(_RECIPES))}.")
    return _RECIPES[name]


def list_recipes() -> list[str]:
    """Sorted names of the registered recipes."""
    _load()
    return sorted(_RECIPES)
