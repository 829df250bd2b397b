"""What a masked autoencoder sees and rebuilds: original, masked input and reconstruction, side by side."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from keras_vit.layers.masking import patchify, unpatchify
from keras_vit.visualize.figures import check_png_path, image_axes, new_figure, save_figure

COLUMNS = ("original", "masked", "reconstruction", "reconstruction + visible")


def mae_reconstruction(mae, images, noise=None) -> dict[str, np.ndarray]:
    """Runs `mae` on `images` and returns the three pictures in the model's input units.

    With `norm_pix_loss` the predictions are per-patch normalised pixels; they
    are put back in pixel units with each original patch's mean and standard
    deviation (as the paper's demo does).

    Args:
        mae: a `keras_vit.MAE`.
        images: float `(batch, h, w, c)` model inputs.
        noise: optional `(batch, patches)` masking noise (lowest kept).

    Returns:
        {"original", "masked" (removed patches zeroed), "reconstruction",
        "pasted" (reconstruction with the visible patches of the original),
        "mask" `(batch, h, w)` with 1 on removed pixels}, numpy float32.
    """
    images = np.asarray(images, dtype="float32")
    out = mae(images, noise=noise)
    patch, size, channels = mae.config.patch_size, mae.config.image_size, mae.config.num_channels
    pred = np.asarray(out["pred"], dtype="float32")
    if mae.norm_pix_loss:
        target = np.asarray(patchify(images, patch))
        mean = target.mean(-1, keepdims=True)
        std = np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
        pred = pred * std + mean
    mask = np.asarray(out["mask"], dtype="float32")
    pixel_mask = np.asarray(unpatchify(np.repeat(mask[..., None], pred.shape[-1], -1), patch, size, channels))
    reconstruction = np.asarray(unpatchify(pred, patch, size, channels))
    return {
        "original": images,
        "masked": images * (1.0 - pixel_mask),
        "reconstruction": reconstruction,
        "pasted": images * (1.0 - pixel_mask) + reconstruction * pixel_mask,
        "mask": pixel_mask[..., 0],
    }


def plot_mae_reconstruction(
    mae, images, path: str | os.PathLike, *, noise=None, mean=None, std=None, panel_px: int = 120
) -> dict[str, Any]:
    """Draws, per image, the original, the masked input and the reconstruction in one PNG row (atomic write).

    Args:
        mae: a `keras_vit.MAE`.
        images: float `(batch, h, w, c)` model inputs (normalised).
        path: PNG file to write.
        noise: optional `(batch, patches)` masking noise; random when None.
        mean, std: the normalisation of `images`, undone for display; defaults
            to the encoder variant's (`keras_vit.model_spec`), else none.
        panel_px: height of each panel in pixels. Defaults to 120.

    Returns:
        The arrays drawn (see `mae_reconstruction`), in display units.
    """
    path = check_png_path(path)
    if mean is None and std is None and mae.encoder:
        from keras_vit.models import model_spec
        from keras_vit.models.mae import resolve_encoder

        spec = model_spec(resolve_encoder(mae.encoder)[0])
        mean, std = spec.mean, spec.std
    arrays = mae_reconstruction(mae, images, noise)
    shown = {}
    for key in ("original", "masked", "reconstruction", "pasted"):
        value = arrays[key]
        if mean is not None:
            value = value * np.asarray(std, "float32") + np.asarray(mean, "float32")
        value = np.clip(value, 0.0, 1.0)
        if key == "masked":  # removed patches drawn grey
            value = np.where(arrays["mask"][..., None] > 0, 0.5, value)
        shown[key] = np.repeat(value, 3, -1) if value.shape[-1] == 1 else value
    batch, height, width = shown["original"].shape[:3]
    panel_w = max(1, round(panel_px * width / height))
    figure = new_figure(panel_w * len(COLUMNS), panel_px * batch + 20)
    axes = figure.subplots(batch, len(COLUMNS), squeeze=False)
    for row in range(batch):
        for column, key in enumerate(("original", "masked", "reconstruction", "pasted")):
            image_axes(axes[row, column], shown[key][row], COLUMNS[column] if row == 0 else None)
    save_figure(figure, path)
    return {**shown, "mask": arrays["mask"]}
