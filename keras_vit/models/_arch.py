"""Helpers shared by the functional models built from a variant name plus architecture arguments."""

from __future__ import annotations

import dataclasses
from typing import Any


def check_arch_names(arch: dict[str, Any], config_cls: type, model: str) -> None:
    """Rejects architecture arguments that are not fields of `config_cls`.

    Args:
        arch: the arguments given (variant defaults merged in).
        config_cls: the model's config dataclass (e.g. `ViTConfig`).
        model: the model's name in the message (e.g. "ViT").
    """
    fields = [f.name for f in dataclasses.fields(config_cls)]
    unknown = set(arch) - set(fields)
    if unknown:
        raise ValueError(f"Unknown {model} argument(s) {sorted(unknown)}. Valid: {fields}")


def from_variant_config(cls: type, config: dict[str, Any]):
    """`cls(variant, **arch)` from a `get_config()` dict.

    The variant is positional-only in the constructors, and Keras adds
    `trainable` to a saved config, which the constructors do not take.
    """
    config = dict(config)
    variant = config.pop("variant", None)
    config.pop("trainable", None)
    return cls(variant, **config)
