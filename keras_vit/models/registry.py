"""The model zoo: one registry of named variants, filled by this package and by plugins.

A variant is a builder function (`**overrides -> keras.Model`) plus a
`ModelSpec` of metadata kept apart from the architecture: input size,
preprocessing, source and license (timm's `pretrained_cfg` idea). Other packages
register variants through the entry-point group `keras_vit.models`; an entry
point names a module (whose import registers models) or a builder function
(registered under the entry point's name).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib.metadata
import warnings
from collections.abc import Callable, Iterable
from typing import Any

ENTRY_POINT_GROUP = "keras_vit.models"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a user needs to know about a registered model besides its weights.

    Attributes:
        name: registry name (timm's where timm has the model).
        family: "vit", "deit", "transformer" or a plugin's own.
        arch: architecture arguments of the model class, or `{}` when the
            builder is an opaque function.
        input_size: (height, width) the model is built for.
        mean, std: per-channel normalisation of [0, 1] pixels.
        crop_pct: centre-crop fraction used at evaluation (resize to size / crop_pct, then crop).
        interpolation: resize filter used at evaluation.
        num_classes: classes of the reference head.
        source: paper or code the variant comes from.
        license: license of the published weights, when there are some.
        num_params: parameter count with `num_classes` classes (computed).

    Examples:
        >>> spec = keras_vit.model_spec("deit_small_patch16_224")
        >>> spec.family, spec.input_size, spec.crop_pct
        ('deit', (224, 224), 0.875)
    """

    name: str
    family: str = "custom"
    arch: dict = dataclasses.field(default_factory=dict)
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    num_classes: int = 1000
    source: str = ""
    license: str = ""
    num_params: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Entry:
    builder: Callable[..., Any]
    spec: ModelSpec


_REGISTRY: dict[str, _Entry] = {}
_plugins_loaded = False


def register_model(fn: Callable | None = None, *, name: str | None = None, spec: ModelSpec | dict | None = None):
    """Registers a builder function under its own name (or `name`).

    Usable bare (`@register_model`) or with metadata
    (`@register_model(spec=dict(input_size=(32, 32), source="..."))`).
    Registering a taken name warns and replaces the old entry.

    Args:
        fn: the builder, a callable taking keyword overrides and returning a
            model (given when used bare).
        name: str or None. Registry name. Defaults to `fn.__name__`.
        spec: `ModelSpec`, dict of its fields, or None: input size, mean/std,
            source and so on, shown by `model_spec(name)`.

    Returns:
        The function, unchanged.

    Examples:
        >>> @keras_vit.register_model(spec=dict(input_size=(32, 32), source="my lab"))
        ... def my_vit(**overrides):
        ...     return keras_vit.ViT(**dict(dict(image_size=32, patch_size=4, hidden_dim=64, depth=2, num_heads=2,
        ...                                      mlp_dim=128, num_classes=10), **overrides))
        >>> keras_vit.create_model("my_vit", num_classes=3).output_shape
        (None, 3)
    """

    def decorate(builder):
        model_name = name or builder.__name__
        if isinstance(spec, ModelSpec):
            model_spec = dataclasses.replace(spec, name=model_name)
        else:
            model_spec = ModelSpec(name=model_name, **(spec or {}))
        _add(model_name, _Entry(builder, model_spec))
        return builder

    return decorate(fn) if fn is not None else decorate


def _add(name: str, entry: _Entry) -> None:
    if name in _REGISTRY:
        warnings.warn(f"Model '{name}' is registered twice; the later registration replaces the earlier.", stacklevel=3)
    _REGISTRY[name] = entry


@dataclasses.dataclass(frozen=True)
class VariantBuilder:
    """Builds a variant described by data: `model_class(name, **overrides)`; the class reads `arch` from the spec."""

    model_class: Callable[..., Any]
    name: str

    def __call__(self, **overrides) -> Any:
        return self.model_class(self.name, **overrides)


def register_variants(
    specs: Iterable[ModelSpec],
    model_class_for: Callable[[ModelSpec], Callable[..., Any]],
    param_count: Callable[[dict[str, Any]], int],
) -> None:
    """Registers one family's variant table, the single way built-in variants enter the zoo.

    Args:
        specs: the family's variants (name, arch and preprocessing metadata).
        model_class_for: the model class that builds a spec's variant (e.g. `DeiT` for distilled ones).
        param_count: exact parameter count from `arch`, without building the model.
    """
    for spec in specs:
        spec = dataclasses.replace(spec, num_params=param_count(spec.arch))
        _add(spec.name, _Entry(VariantBuilder(model_class_for(spec), spec.name), spec))


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception as error:  # noqa: BLE001  (a broken plugin, whatever it raises, must not break the zoo)
            warnings.warn(f"Could not load keras_vit plugin '{entry_point.value}': {error!r}", stacklevel=2)
            continue
        if callable(loaded) and entry_point.name not in _REGISTRY:
            register_model(loaded, name=entry_point.name)


def _entry(name: str) -> _Entry:
    _load_plugins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model name {name!r}.{hint} See `keras_vit.list_models()` for every registered name.")
    return _REGISTRY[name]


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching an fnmatch `pattern`.

    Args:
        pattern: str. Shell-style wildcards (`fnmatch`, case-sensitive), e.g.
            "deit_*" or "*patch14*". Defaults to "*" (every model).

    Returns:
        list[str] of names, including models added by plugins (the
        "keras_vit.models" entry-point group).

    Examples:
        >>> keras_vit.list_models("deit_tiny*")
        ['deit_tiny_distilled_patch16_224', 'deit_tiny_patch16_224']
    """
    _load_plugins()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def create_model(name: str, **overrides) -> Any:
    """Builds the registered model `name`; keyword arguments override its defaults.

    Args:
        name: str. A registered name (`keras_vit.list_models()`); an unknown
            name raises a ValueError listing close matches.
        **overrides: arguments of the model's builder, e.g. `num_classes=10`,
            `image_size=384`, `drop_path_rate=0.1`, `weights="model.safetensors"`.

    Returns:
        A new Keras model (`ViT`, `DeiT`, `Transformer` or a plugin's class).

    Examples:
        >>> model = keras_vit.create_model("deit_tiny_distilled_patch16_224", num_classes=100)
        >>> model.output_shape
        (None, 100)
    """
    return _entry(name).builder(**overrides)


def model_spec(name: str) -> ModelSpec:
    """The `ModelSpec` of a registered model, with its parameter count filled in.

    Counted from the architecture when the family knows how (no model is
    built); otherwise by building the model once.

    Args:
        name: str. A registered name (`keras_vit.list_models()`).

    Returns:
        `ModelSpec`: architecture, input size, normalisation, crop, source and
        parameter count.

    Examples:
        >>> spec = keras_vit.model_spec("vit_base_patch16_224")
        >>> spec.input_size, spec.mean, spec.num_params
        ((224, 224), (0.5, 0.5, 0.5), 86567656)
    """
    spec = _entry(name).spec
    if spec.num_params is None:
        spec = dataclasses.replace(spec, num_params=create_model(name).count_params())
    return spec
