"""The pictures: attention rollout overlays, per-head maps, position-embedding
similarity, mean attention distance, activation statistics and training curves.

Every function writes one PNG of a documented pixel size (headless, atomic)
and returns the arrays it drew, so users can plot their own way. In a notebook,
`IPython.display.Image(result["path"])` shows the file inline.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from keras_vit.validation import check_positive_int
from keras_vit.visualize import figures
from keras_vit.visualize.activations import activation_statistics
from keras_vit.visualize.attention import attention_maps, attention_rollout, normalize_maps, upsample
from keras_vit.visualize.curves import metric_pairs, read_training_log
from keras_vit.visualize.distance import mean_attention_distance
from keras_vit.visualize.positions import position_embedding_similarity
from keras_vit.visualize.tokens import TokenLayout, check_layer, intermediates_for

MIN_DRAW_HEIGHT = 128  # tiny inputs (8x8 digits) are drawn enlarged so the overlay is readable


def _drawable(images: np.ndarray, display: Any) -> np.ndarray:
    """Display images, enlarged by an integer factor (nearest) when tiny."""
    pictures = figures.display_images(images, display)
    factor = max(1, math.ceil(MIN_DRAW_HEIGHT / pictures.shape[1])) if pictures.shape[1] < 64 else 1
    if factor > 1:
        pictures = np.repeat(np.repeat(pictures, factor, axis=1), factor, axis=2)
    return pictures


def plot_attention_rollout(
    model: Any,
    images: Any,
    path: str | os.PathLike,
    *,
    display_images: Any = None,
    token: str = "cls",
    fusion: str = "mean",
    discard_ratio: float = 0.0,
    alpha: float = 0.5,
    cmap: str = "jet",
    panel_px: int = 200,
    dpi: int = 100,
    intermediates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Attention rollout up-sampled and overlaid on each input image.

    One row per image: the image, the rollout map, the overlay. The figure is
    `3 * panel_width` x `batch * panel_px` pixels, where `panel_width =
    round(panel_px * width / height)` of the displayed image.

    Args:
        model: a keras_vit ViT/DeiT.
        images: float `(batch, height, width, channels)` model inputs.
        path: PNG file to write.
        display_images: optional `(batch, h, w, c)` uint8 or [0, 1] pictures to
            draw (e.g. the photographs before normalising, any resolution);
            defaults to the inputs, min-max scaled.
        token: "cls", "dist" or "mean". Defaults to "cls".
        fusion: head fusion, "mean", "max" or "min". Defaults to "mean".
        discard_ratio: float in [0, 1). Defaults to 0.
        alpha: heat-map opacity. Defaults to 0.5.
        cmap: matplotlib colormap name. Defaults to "jet".
        panel_px: panel height in pixels. Defaults to 200.
        dpi: Defaults to 100.
        intermediates: optional output of `run_intermediates` to reuse.

    Returns:
        dict: "rollout" `(batch, rows, columns)` raw rollout on the patches,
        "heatmap" `(batch, h, w)` the [0, 1] up-sampled map drawn, "overlay"
        `(batch, h, w, 3)`, "path" and "size" (width, height) of the PNG.
    """
    path = figures.check_png_path(path)
    out = intermediates_for(model, images, intermediates)
    maps = attention_rollout(model, images, token, fusion, discard_ratio, intermediates=out)
    pictures = _drawable(out["images"], display_images)
    heat = upsample(normalize_maps(maps), pictures.shape[1:3])
    blended = figures.overlay(pictures, heat, alpha, cmap)
    width, height = figures.panel_size(pictures.shape[1:3], panel_px)
    size = (3 * width, len(pictures) * height)
    figure = figures.new_figure(*size, dpi=dpi)
    grid = figure.subplots(len(pictures), 3, squeeze=False)
    title = f"rollout ({token}, {fusion}" + (f", discard {discard_ratio:g})" if discard_ratio else ")")
    for row, (picture, hot, mixed) in enumerate(zip(pictures, heat, blended)):
        figures.image_axes(grid[row, 0], picture, "image" if row == 0 else None)
        figures.image_axes(
            grid[row, 1], figures.require_matplotlib().colormaps[cmap](hot)[..., :3], title if row == 0 else None
        )
        figures.image_axes(grid[row, 2], mixed, "overlay" if row == 0 else None)
    figures.save_figure(figure, path)
    return {"rollout": maps, "heatmap": heat, "overlay": blended, "path": path, "size": size}


def plot_attention_heads(
    model: Any,
    images: Any,
    path: str | os.PathLike,
    *,
    layer: int = -1,
    index: int = 0,
    token: str = "cls",
    display_images: Any = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    columns: int = 4,
    panel_px: int = 160,
    dpi: int = 100,
    intermediates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A grid with one attention map per head of one block, overlaid on image `index`.

    The first panel is the image itself, then heads 0..H-1. With `n = heads + 1`
    panels in `min(columns, n)` columns, the figure is `columns * panel_width`
    x `ceil(n / columns) * panel_px` pixels.

    Args:
        model: a keras_vit ViT/DeiT.
        images: float `(batch, height, width, channels)`.
        path: PNG file to write.
        layer: block index (negative from the end). Defaults to -1.
        index: which image of the batch to draw. Defaults to 0.
        token: query row: "cls", "dist" or "mean". Defaults to "cls".
        display_images, alpha, cmap, panel_px, dpi, intermediates: as in
            `plot_attention_rollout`.
        columns: panels per row. Defaults to 4.

    Returns:
        dict: "maps" `(heads, rows, columns)` raw attention of `token` on the
        patches of image `index`, "overlay" `(heads, h, w, 3)`, "layer" (the
        non-negative block index), "path" and "size".
    """
    path = figures.check_png_path(path)
    out = intermediates_for(model, images, intermediates)
    layout: TokenLayout = out["layout"]
    layer = check_layer(layer, layout.depth)
    batch = len(out["images"])
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < batch:
        raise ValueError(f"`index` must be an int in [0, {batch - 1}]. Received: index={index!r}")
    check_positive_int(columns, "columns")
    maps = attention_maps(model, images, layer, None, token, intermediates=out)[index]
    picture = _drawable(out["images"], display_images)[index]
    heat = upsample(normalize_maps(maps), picture.shape[:2])
    blended = figures.overlay(np.broadcast_to(picture, (len(maps), *picture.shape)), heat, alpha, cmap)
    panels = len(maps) + 1
    cols = min(columns, panels)
    rows = math.ceil(panels / cols)
    width, height = figures.panel_size(picture.shape[:2], panel_px)
    size = (cols * width, rows * height)
    figure = figures.new_figure(*size, dpi=dpi)
    grid = figure.subplots(rows, cols, squeeze=False).reshape(-1)
    figures.image_axes(grid[0], picture, f"block {layer}, {token} token")
    for head, mixed in enumerate(blended):
        figures.image_axes(grid[head + 1], mixed, f"head {head}")
    for axes in grid[panels:]:
        axes.axis("off")
    figures.save_figure(figure, path)
    return {"maps": maps, "overlay": blended, "layer": layer, "path": path, "size": size}


def similarity_mosaic(similarity: np.ndarray) -> np.ndarray:
    """Tiles `(R, C, R, C)` similarity maps into one image, one-pixel NaN gaps between tiles."""
    rows, cols = similarity.shape[:2]
    mosaic = np.full((rows * (rows + 1) - 1, cols * (cols + 1) - 1), np.nan, dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            mosaic[r * (rows + 1) : r * (rows + 1) + rows, c * (cols + 1) : c * (cols + 1) + cols] = similarity[r, c]
    return mosaic


def plot_position_embedding_similarity(
    model: Any, path: str | os.PathLike, *, width_px: int = 640, height_px: int = 560, dpi: int = 100
) -> dict[str, Any]:
    """Cosine similarity of each patch's position embedding with all others (ViT fig. 7 left).

    Tile (r, c) of the mosaic is the similarity map of input patch (r, c).

    Args:
        model: a keras_vit ViT/DeiT with learned or sin-cos position embeddings.
        path: PNG file to write.
        width_px, height_px, dpi: figure size in pixels. Defaults to 640 x 560 at 100 dpi.

    Returns:
        dict: "similarity" `(rows, columns, rows, columns)`, "mosaic" (the
        image drawn), "path" and "size".
    """
    path = figures.check_png_path(path)
    similarity = position_embedding_similarity(model)
    mosaic = similarity_mosaic(similarity)
    figure = figures.new_figure(width_px, height_px, dpi=dpi)
    axes = figure.subplots()
    shown = axes.imshow(mosaic, cmap="viridis", vmin=-1.0, vmax=1.0, interpolation="nearest")
    rows, cols = similarity.shape[:2]
    axes.set_xticks([c * (cols + 1) + (cols - 1) / 2 for c in range(cols)], [str(c + 1) for c in range(cols)])
    axes.set_yticks([r * (rows + 1) + (rows - 1) / 2 for r in range(rows)], [str(r + 1) for r in range(rows)])
    axes.tick_params(labelsize=7, length=0)
    axes.set_xlabel("input patch column")
    axes.set_ylabel("input patch row")
    axes.set_title("position embedding similarity")
    figure.colorbar(shown, ax=axes, label="cosine similarity", shrink=0.8)
    figures.save_figure(figure, path)
    return {"similarity": similarity, "mosaic": mosaic, "path": path, "size": (width_px, height_px)}


def plot_mean_attention_distance(
    model: Any,
    images: Any,
    path: str | os.PathLike,
    *,
    width_px: int = 640,
    height_px: int = 480,
    dpi: int = 100,
    intermediates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Mean attention distance of every head against depth (ViT fig. 7 right).

    Args:
        model: a keras_vit ViT/DeiT.
        images: float `(batch, height, width, channels)`.
        path: PNG file to write.
        width_px, height_px, dpi: figure size. Defaults to 640 x 480 at 100 dpi.
        intermediates: optional output of `run_intermediates` to reuse.

    Returns:
        dict: "distance" `(depth, heads)` and "per_image" `(batch, depth, heads)`
        in pixels, "path" and "size".
    """
    path = figures.check_png_path(path)
    out = intermediates_for(model, images, intermediates)
    result = mean_attention_distance(model, images, intermediates=out)
    distance = result["distance"]
    depth, heads = distance.shape
    figure = figures.new_figure(width_px, height_px, dpi=dpi)
    axes = figure.subplots()
    colours = figures.require_matplotlib().colormaps["tab20"]
    for head in range(heads):
        axes.scatter(np.arange(depth), distance[:, head], s=18, color=colours(head % 20), label=f"head {head}")
    axes.plot(np.arange(depth), distance.mean(axis=1), color="black", linewidth=1, label="mean")
    image_size = out["layout"].image_size
    diagonal = math.hypot(*image_size)
    axes.set_ylim(0, diagonal)
    axes.set_xticks(np.arange(depth))
    axes.set_xlabel("network depth (block)")
    axes.set_ylabel("mean attention distance (pixels)")
    axes.set_title(f"mean attention distance, {image_size[0]}x{image_size[1]} input")
    if heads <= 16:
        axes.legend(fontsize=6, ncols=2, loc="lower right")
    figures.save_figure(figure, path)
    return dict(result, path=path, size=(width_px, height_px))


def plot_activation_statistics(
    model: Any,
    images: Any,
    path: str | os.PathLike,
    *,
    top_k: int = 5,
    index: int = 0,
    width_px: int = 960,
    height_px: int = 720,
    dpi: int = 100,
    intermediates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Which blocks, tokens and channels activate most, for a batch.

    Top left: mean and max patch-token norm per block, and each prefix token's
    norm. Top right: mean |activation| per channel and block (the top-k channels
    marked). Bottom: the patch-norm map of image `index` after each block (up to
    12 blocks, evenly spaced).

    Args:
        model: a keras_vit ViT/DeiT.
        images: float `(batch, height, width, channels)`.
        path: PNG file to write.
        top_k: most active channels to report per block. Defaults to 5.
        index: image whose feature-map norms are drawn. Defaults to 0.
        width_px, height_px, dpi: figure size. Defaults to 960 x 720 at 100 dpi.
        intermediates: optional output of `run_intermediates` to reuse.

    Returns:
        `activation_statistics(...)`'s dict plus "path" and "size".
    """
    path = figures.check_png_path(path)
    out = intermediates_for(model, images, intermediates)
    stats = activation_statistics(model, images, top_k=top_k, intermediates=out)
    layout: TokenLayout = out["layout"]
    batch = len(out["images"])
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < batch:
        raise ValueError(f"`index` must be an int in [0, {batch - 1}]. Received: index={index!r}")
    depth = layout.depth
    shown = sorted(set(np.linspace(0, depth - 1, min(depth, 12)).round().astype(int).tolist()))
    figure = figures.new_figure(width_px, height_px, dpi=dpi)
    top, bottom = figure.subfigures(2, 1, height_ratios=[2.2, 1])
    norms_axes, channel_axes = top.subplots(1, 2)
    blocks = np.arange(depth)
    norms_axes.plot(blocks, stats["mean_patch_norm"], marker="o", label="patches (mean)")
    norms_axes.plot(blocks, stats["max_patch_norm"], marker="^", linestyle="--", label="patches (max)")
    names = (["cls"] if layout.class_token else []) + (["dist"] if layout.distillation_token else [])
    names += [f"reg {i}" for i in range(layout.num_register_tokens)]
    for position, name in enumerate(names):
        norms_axes.plot(blocks, stats["prefix_norm"][:, position], marker=".", label=name)
    norms_axes.set_xticks(blocks)
    norms_axes.set_xlabel("block")
    norms_axes.set_ylabel("token L2 norm")
    norms_axes.set_title("token norms per block")
    norms_axes.legend(fontsize=7)
    heat = channel_axes.imshow(stats["channel_mean_abs"], aspect="auto", cmap="magma", interpolation="nearest")
    for block in blocks:
        channel_axes.scatter(
            stats["top_channels"][block],
            np.full(stats["top_channels"].shape[1], block),
            marker="x",
            s=12,
            color="cyan",
            linewidths=0.8,
        )
    channel_axes.set_yticks(blocks)
    channel_axes.set_xlabel("channel")
    channel_axes.set_ylabel("block")
    channel_axes.set_title(f"mean |activation| per channel (x = top {stats['top_channels'].shape[1]})")
    top.colorbar(heat, ax=channel_axes)
    maps = bottom.subplots(1, len(shown), squeeze=False)[0]
    for axes, block in zip(maps, shown):
        axes.imshow(stats["patch_norms"][index, block], cmap="viridis", interpolation="nearest")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(f"block {block}", fontsize=7)
    bottom.suptitle(f"patch feature norms, image {index}", fontsize=9)
    figures.save_figure(figure, path)
    return dict(stats, path=path, size=(width_px, height_px))


def plot_training_curves(
    log_path: str | os.PathLike,
    path: str | os.PathLike,
    *,
    columns: int = 3,
    panel_px: tuple[int, int] = (400, 300),
    dpi: int = 100,
) -> dict[str, Any]:
    """Training and validation curves from a `keras.callbacks.CSVLogger` file.

    One panel per metric (loss first), training solid and `val_` dashed. With
    `n` panels the figure is `min(columns, n) * panel_px[0]` x
    `ceil(n / columns) * panel_px[1]` pixels.

    Args:
        log_path: the CSV log (columns epoch, loss, accuracy, val_*, ...).
        path: PNG file to write.
        columns: panels per row. Defaults to 3.
        panel_px: (width, height) of a panel in pixels. Defaults to (400, 300).
        dpi: Defaults to 100.

    Returns:
        dict: "columns" (column name -> `(epochs,)` array), "path" and "size".
    """
    path = figures.check_png_path(path)
    data = read_training_log(log_path)
    panels = metric_pairs(data)
    if not panels:
        raise ValueError(f"The training log has no metric columns besides 'epoch'. Received: path={log_path!r}")
    check_positive_int(columns, "columns")
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    size = (cols * int(panel_px[0]), rows * int(panel_px[1]))
    figure = figures.new_figure(*size, dpi=dpi)
    grid = figure.subplots(rows, cols, squeeze=False).reshape(-1)
    epochs = data["epoch"] + 1  # CSVLogger counts from 0
    for axes, (metric, train, validation) in zip(grid, panels):
        if train:
            axes.plot(epochs, data[train], label="train")
        if validation:
            axes.plot(epochs, data[validation], linestyle="--", label="validation")
        axes.set_title(metric)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    for axes in grid[len(panels) :]:
        axes.axis("off")
    figures.save_figure(figure, path)
    return {"columns": data, "path": path, "size": size}


def show(result: dict[str, Any] | str | os.PathLike) -> Any:
    """Shows a written plot inline in a notebook (IPython) and returns the `IPython.display.Image`.

    Args:
        result: a `plot_*` result dict (its "path") or a PNG path.
    """
    path = os.fspath(result["path"] if isinstance(result, dict) else result)
    if not os.path.isfile(path):
        raise ValueError(f"No such plot file. Received: path={path!r}")
    try:
        from IPython.display import Image, display
    except ImportError as error:  # pragma: no cover - IPython comes with Jupyter
        raise ImportError("show() needs IPython (Jupyter); open the PNG file instead.") from error
    image = Image(filename=path)
    display(image)
    return image
