"""Attention maps per layer and head, and attention rollout (Abnar & Zuidema 2020).

All computation is numpy on the weights `model.forward_intermediates` returns,
so the arrays are the model's own and users can plot them any way they like.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_vit.visualize.tokens import TokenLayout, check_layer, intermediates_for

FUSIONS = ("mean", "max", "min")


def attention_weights(model: Any, images: Any) -> list[np.ndarray]:
    """Every block's attention weights for a batch.

    Args:
        model: a keras_vit ViT/DeiT.
        images: float `(batch, height, width, channels)`, normalised as the model expects.

    Returns:
        list over blocks of `(batch, heads, tokens, tokens)` float32; rows
        (queries) sum to 1 over keys. Token order `[cls, dist, registers..., patches]`.
    """
    return intermediates_for(model, images, None)["attention"]


def attention_maps(
    model: Any,
    images: Any,
    layer: int = -1,
    head: int | None = None,
    token: str = "cls",
    intermediates: dict[str, Any] | None = None,
) -> np.ndarray:
    """How much `token` attends to each patch, in one block, per head.

    Args:
        model: a keras_vit ViT/DeiT.
        images: float `(batch, height, width, channels)`.
        layer: int. Block index; negative counts from the last. Defaults to -1.
        head: int or None. One head, or None for all. Defaults to None.
        token: "cls", "dist" (DeiT distillation token) or "mean" (mean over
            patch queries). Defaults to "cls".
        intermediates: optional output of `run_intermediates` to reuse.

    Returns:
        `(batch, heads, rows, columns)` (heads = 1 when `head` is given):
        attention weights on the patch keys; prefix and register keys are left out.
    """
    out = intermediates_for(model, images, intermediates)
    layout: TokenLayout = out["layout"]
    index = check_layer(layer, layout.depth)
    weights = out["attention"][index]
    if head is not None:
        if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < layout.num_heads:
            raise ValueError(f"`head` must be None or an int in [0, {layout.num_heads - 1}]. Received: head={head!r}")
        weights = weights[:, head : head + 1]
    return layout.patch_grid(layout.query_rows(weights, token))


def fuse_heads(weights: np.ndarray, fusion: str) -> np.ndarray:
    """Combines `(batch, heads, q, k)` attention over heads by "mean", "max" or "min"."""
    if fusion == "mean":
        return weights.mean(axis=1)
    if fusion == "max":
        return weights.max(axis=1)
    if fusion == "min":
        return weights.min(axis=1)
    raise ValueError(f"`fusion` must be one of {FUSIONS}. Received: fusion={fusion!r}")


def rollout(attention: list[np.ndarray], fusion: str = "mean", discard_ratio: float = 0.0) -> np.ndarray:
    """Attention rollout: how much each output token draws on each input token.

    Abnar & Zuidema 2020 (https://arxiv.org/abs/2005.00928): each block's
    heads are fused, the residual path is added as `0.5 * A + 0.5 * I`, rows
    are renormalised, and the blocks are multiplied, last block on the left.
    With `discard_ratio > 0`, the lowest `discard_ratio` fraction of each
    example's fused matrix is set to zero before the identity is added, which
    removes the diffuse low-weight background (the `discard_ratio` of J.
    Gildenblat's vit-explain; here every entry, the class token's own included,
    may be discarded).

    Args:
        attention: list over blocks of `(batch, heads, tokens, tokens)`.
        fusion: "mean", "max" or "min" over heads. Defaults to "mean".
        discard_ratio: float in [0, 1). Defaults to 0.

    Returns:
        `(batch, tokens, tokens)` rollout matrices; rows sum to 1.
    """
    if not attention:
        raise ValueError("`attention` must be a non-empty list of (batch, heads, tokens, tokens) arrays.")
    if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) or not 0 <= discard_ratio < 1:
        raise ValueError(f"`discard_ratio` must be a float in [0, 1). Received: discard_ratio={discard_ratio!r}")
    if fusion not in FUSIONS:
        raise ValueError(f"`fusion` must be one of {FUSIONS}. Received: fusion={fusion!r}")
    result = None
    for weights in attention:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 4 or weights.shape[-1] != weights.shape[-2]:
            raise ValueError(
                f"Each attention array must be (batch, heads, tokens, tokens). Received: shape={weights.shape}"
            )
        fused = fuse_heads(weights, fusion)
        batch, tokens = fused.shape[0], fused.shape[-1]
        count = int(discard_ratio * tokens * tokens)
        if count:
            flat = fused.reshape(batch, -1).copy()
            lowest = np.argpartition(flat, count - 1, axis=1)[:, :count]
            np.put_along_axis(flat, lowest, 0.0, axis=1)
            fused = flat.reshape(batch, tokens, tokens)
        mixed = 0.5 * fused + 0.5 * np.eye(tokens)
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        result = mixed if result is None else mixed @ result
    return result.astype(np.float32)


def attention_rollout(
    model: Any,
    images: Any,
    token: str = "cls",
    fusion: str = "mean",
    discard_ratio: float = 0.0,
    intermediates: dict[str, Any] | None = None,
) -> np.ndarray:
    """Rollout of `token`'s row over the patch grid for a batch.

    Args:
        model: a keras_vit ViT/DeiT.
        images: float `(batch, height, width, channels)`.
        token: "cls", "dist" or "mean" (see `attention_maps`). Defaults to "cls".
        fusion: "mean", "max" or "min". Defaults to "mean".
        discard_ratio: float in [0, 1). Defaults to 0.
        intermediates: optional output of `run_intermediates` to reuse.

    Returns:
        `(batch, rows, columns)`: the rolled-out attention of `token` on each
        patch (register and other prefix tokens left out).
    """
    out = intermediates_for(model, images, intermediates)
    layout: TokenLayout = out["layout"]
    matrix = rollout(out["attention"], fusion=fusion, discard_ratio=discard_ratio)
    return layout.patch_grid(layout.query_rows(matrix, token))


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """`(out_size, in_size)` linear map doing 1D bilinear resampling with half-pixel centres."""
    centres = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    centres = np.clip(centres, 0.0, in_size - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, in_size - 1)
    frac = centres - low
    matrix = np.zeros((out_size, in_size))
    matrix[np.arange(out_size), low] += 1.0 - frac
    matrix[np.arange(out_size), high] += frac
    return matrix


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resizes `(..., rows, columns)` patch maps to `(..., height, width)` pixels."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim < 2:
        raise ValueError(f"Expected maps of rank >= 2 (..., rows, columns). Received: shape={maps.shape}")
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"`size` must be two positive ints. Received: size={size!r}")
    rows = bilinear_matrix(maps.shape[-2], height)
    cols = bilinear_matrix(maps.shape[-1], width)
    return np.einsum("hr,...rc,wc->...hw", rows, maps, cols).astype(np.float32)


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Scales each `(..., rows, columns)` map to [0, 1] (constant maps become 0) for display."""
    maps = np.asarray(maps, dtype=np.float64)
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
