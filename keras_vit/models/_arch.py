"""Helpers shared by the functional models built from a variant name plus architecture arguments."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np


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


def block_indices(indices: int | list[int] | None, depth: int) -> list[int]:
    """Blocks chosen as timm's `forward_intermediates(indices=...)` chooses them.

    None: every block; an int n: the last n; a list: those blocks, negative
    indices counting from the end.
    """
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= depth:
            raise ValueError(
                f"An int `indices` takes the last n of {depth} blocks, 1 <= n <= {depth}. Received: indices={indices}"
            )
        return list(range(depth - indices, depth))
    chosen = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -depth <= index < depth:
            raise ValueError(f"Block indices must be ints in [-{depth}, {depth}). Received: indices={list(indices)!r}")
        chosen.append(int(index) % depth)
    return chosen


def patch_maps(tokens, num_prefix_tokens: int, grid: tuple[int, int]):
    """`(batch, prefix + rows * cols, dim)` tokens -> `(batch, rows, cols, dim)` maps of the patch tokens."""
    return keras.ops.reshape(tokens[:, num_prefix_tokens:], (-1, *grid, tokens.shape[-1]))
