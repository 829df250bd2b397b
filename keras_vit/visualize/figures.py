"""matplotlib plumbing: headless figures of an exact pixel size, written atomically as PNG.

Figures are built with `matplotlib.figure.Figure` on the Agg canvas, never
through pyplot, so nothing needs a display and the global backend of a user's
notebook is left alone. matplotlib is the `plot` extra.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np


def require_matplotlib() -> Any:
    """Imports matplotlib or says how to install it."""
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - the extra is installed in CI
        raise ImportError("keras_vit.visualize plots need matplotlib: pip install 'keras-vit[plot]'") from error
    return matplotlib


def check_png_path(path: str | os.PathLike) -> str:
    """Plots are PNG files; returns the path as str."""
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"Plots are written as PNG; give a path ending in '.png'. Received: path={path!r}")
    return path


def new_figure(width_px: int, height_px: int, dpi: int = 100) -> Any:
    """A `Figure` that saves to exactly `width_px` x `height_px` pixels at `dpi`."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for name, value in (("width_px", width_px), ("height_px", height_px), ("dpi", dpi)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    # A hair over the exact size so float rounding never drops the last pixel row.
    figure = Figure(figsize=((width_px + 0.01) / dpi, (height_px + 0.01) / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def publish(temporary: str, path: str) -> None:
    """Gives a finished temporary file the usual permissions (mkstemp makes it 0600) and renames it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


def save_figure(figure: Any, path: str | os.PathLike) -> str:
    """Writes `figure` as PNG atomically (temporary file in the same folder, then rename)."""
    path = check_png_path(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
    os.close(handle)
    try:
        figure.savefig(temporary, format="png", dpi=figure.dpi)
        publish(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def display_images(images: np.ndarray, display: Any = None) -> np.ndarray:
    """Images for drawing: `display` as given (uint8 0-255 or [0, 1] floats), or each model input min-max scaled.

    `display` is `(batch, height, width, 1|3|4)` or `(batch, height, width)` grey, any resolution.

    Returns:
        float32 `(batch, height, width, 3)` in [0, 1] (grey images repeated to RGB).
    """
    if display is None:
        array = np.asarray(images, dtype=np.float64)
        low = array.min(axis=(1, 2, 3), keepdims=True)
        span = array.max(axis=(1, 2, 3), keepdims=True) - low
        array = (array - low) / np.where(span > 0, span, 1.0)
    else:
        raw = np.asarray(display)
        if raw.ndim == 3:  # (batch, height, width) grey pictures
            raw = raw[..., None]
        if raw.ndim != 4 or raw.shape[0] != len(images) or raw.shape[-1] not in (1, 3, 4):
            raise ValueError(
                "`display_images` must be (batch, height, width, 1|3|4) with the same batch as `images` "
                f"({len(images)}). Received: display_images.shape={raw.shape}"
            )
        array = raw.astype(np.float64) / (255.0 if np.issubdtype(raw.dtype, np.integer) else 1.0)
        array = np.clip(array[..., :3], 0.0, 1.0)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array.astype(np.float32)


def overlay(images: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blends `(batch, h, w)` maps in [0, 1], coloured by `cmap`, over `(batch, h, w, 3)` images."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha!r}")
    matplotlib = require_matplotlib()
    colours = matplotlib.colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3]
    return ((1.0 - alpha) * images + alpha * colours).astype(np.float32)


def panel_size(image_shape: tuple[int, int], panel_px: int) -> tuple[int, int]:
    """(width, height) in pixels of a panel `panel_px` high showing an image of `image_shape` (h, w)."""
    if isinstance(panel_px, bool) or not isinstance(panel_px, (int, np.integer)) or panel_px <= 0:
        raise ValueError(f"`panel_px` must be a positive int. Received: panel_px={panel_px!r}")
    height, width = image_shape
    return max(1, int(round(panel_px * width / height))), int(panel_px)


def image_axes(axes: Any, image: np.ndarray, title: str | None = None) -> None:
    """Draws an image panel without ticks."""
    axes.imshow(image, interpolation="nearest" if min(image.shape[:2]) < 64 else "antialiased")
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title, fontsize=8)
