"""Mean attention distance per head and depth (ViT paper, figure 7 right).

Dosovitskiy et al. 2020 (https://arxiv.org/abs/2010.11929) measure how far
in the image each head looks: the distance in pixels between a query patch and
the key patches, weighted by the attention weights, averaged over queries and
images. Low layers mix near and far heads; deep layers look globally.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_vit.visualize.tokens import TokenLayout, intermediates_for


def patch_distances(layout: TokenLayout) -> np.ndarray:
    """`(patches, patches)` Euclidean distances in pixels between patch centres."""
    centres = layout.patch_centres()
    return np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1))


def attention_distance(attention: list[np.ndarray], layout: TokenLayout) -> np.ndarray:
    """Per-image mean attention distance from raw attention weights.

    Only patch-to-patch attention is used (prefix and register tokens have no
    place in the image); each query's weights over patch keys are renormalised
    to sum to 1, so the result is a weighted mean distance in pixels.

    Args:
        attention: list over blocks of `(batch, heads, tokens, tokens)`.
        layout: the model's `TokenLayout`.

    Returns:
        `(batch, depth, heads)` distances in pixels.
    """
    distances = patch_distances(layout)
    start = layout.num_prefix_tokens
    per_block = []
    for weights in attention:
        patches = np.asarray(weights, dtype=np.float64)[:, :, start:, start:]
        patches = patches / np.maximum(patches.sum(axis=-1, keepdims=True), 1e-12)
        per_query = (patches * distances).sum(axis=-1)  # (batch, heads, queries)
        per_block.append(per_query.mean(axis=-1))
    return np.stack(per_block, axis=1).astype(np.float32)


def mean_attention_distance(
    model: Any, images: Any, intermediates: dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Mean attention distance of every head at every depth, for a batch.

    Args:
        model: a keras_vit ViT/DeiT.
        images: float `(batch, height, width, channels)`.
        intermediates: optional output of `run_intermediates` to reuse.

    Returns:
        dict with "distance" `(depth, heads)` (mean over the batch),
        "per_image" `(batch, depth, heads)`, both in pixels of the model input.
    """
    out = intermediates_for(model, images, intermediates)
    per_image = attention_distance(out["attention"], out["layout"])
    return {"distance": per_image.mean(axis=0), "per_image": per_image}
