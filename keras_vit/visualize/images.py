"""Turning picture files into model inputs (and the matching pictures to draw on)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file (PNG, JPEG, ...) as uint8 `(height, width, 3)` RGB."""
    from PIL import Image

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Image file not found. Received: path={path!r}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise ValueError(f"Cannot read {path!r} as an image ({error}). Give a PNG or JPEG file.") from None


def _fit(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes (bicubic) so the picture covers `size`, then centre-crops to it; keeps the aspect ratio."""
    from PIL import Image

    height, width = size
    source = Image.fromarray(picture)
    scale = max(height / source.height, width / source.width)
    resized = source.resize(
        (max(width, round(source.width * scale)), max(height, round(source.height * scale))),
        Image.Resampling.BICUBIC,
    )
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return np.asarray(resized.crop((left, top, left + width, top + height)))


def prepare_images(
    pictures: Sequence[np.ndarray],
    size: tuple[int, int],
    num_channels: int = 3,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> tuple[np.ndarray, np.ndarray]:
    """Resizes and centre-crops uint8 RGB pictures to `size` and normalises them.

    Args:
        pictures: uint8 `(h, w, 3)` arrays of any sizes.
        size: (height, width) of the model input.
        num_channels: 3 for RGB or 1 for grey models. Defaults to 3.
        mean, std: per-channel normalisation of [0, 1] pixels (see `keras_vit.model_spec(name)`).

    Returns:
        `(inputs, display)`: float32 `(batch, height, width, num_channels)` model
        inputs and the uint8 `(batch, height, width, 3)` crops they came from.
    """
    if num_channels not in (1, 3):
        raise ValueError(f"`num_channels` must be 1 or 3. Received: num_channels={num_channels!r}")
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean.size not in (1, num_channels) or std.size not in (1, num_channels) or np.any(std <= 0):
        raise ValueError(
            f"`mean` and `std` need 1 or {num_channels} values, std > 0. Received: mean={mean.tolist()}, "
            f"std={std.tolist()}"
        )
    if not len(pictures):
        raise ValueError("`pictures` is empty; give at least one image.")
    display = []
    for picture in pictures:
        picture = np.asarray(picture)
        if picture.ndim != 3 or picture.shape[-1] != 3 or picture.dtype != np.uint8:
            raise ValueError(
                f"Each picture must be uint8 (height, width, 3). Received: shape={picture.shape}, dtype={picture.dtype}"
            )
        display.append(_fit(picture, tuple(size)))
    display = np.stack(display)
    pixels = display.astype(np.float32) / 255.0
    if num_channels == 1:  # ITU-R 601 luma, as PIL's "L" mode
        pixels = (pixels @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    return ((pixels - mean) / std).astype(np.float32), display
