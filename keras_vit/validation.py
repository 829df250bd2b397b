"""Argument checks shared by layers, models, data and training code.

One place for the checks that every constructor repeats, so that the same mistake
gets the same message everywhere: `ValueError("`name` must be ... Received: name=value")`.
This module imports nothing from keras_vit, so any module may use it.
"""

from collections.abc import Collection
from typing import Any, TypeVar

T = TypeVar("T")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_rate(value: float, name: str) -> float:
    """Dropout-like rates must lie in [0, 1): a rate of 1 would drop everything."""
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")
    return float(value)


def check_positive_int(value: int, name: str) -> int:
    """Sizes and counts (heads, widths, batch sizes) must be ints >= 1; booleans are refused."""
    if not _is_int(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return value


def check_int(value: int, name: str, minimum: int) -> int:
    """Ints with a lower bound other than 1 (token ids >= 0, beam sizes >= 1 in decoding); booleans are refused."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")
    return value


def check_choice(value: T, name: str, choices: Collection[T]) -> T:
    """String options (pooling modes, activations, crop modes) must be one of the names offered."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")
    return value


def to_pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """Normalise an int or (h, w) pair, rejecting non-positive sizes."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(
            f"`{name}` must be a positive int or a pair (height, width) of positive ints. Received: {name}={value!r}"
        )
    return pair
