"""Cosine similarity between position embeddings (ViT paper, figure 7 left).

Each patch's embedding is compared with every other patch's; trained ViTs show
that nearby patches, and patches in the same row or column, have similar
embeddings: the model has learned the 2D image topology from 1D positions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_vit.layers.position import sincos_2d_table
from keras_vit.visualize.tokens import TokenLayout


def patch_position_table(model: Any) -> np.ndarray:
    """The `(rows * columns, dim)` position embeddings of the patch tokens (prefix entries dropped).

    Works on learned tables (also after `model.with_image_size`, which resamples
    them) and on fixed 2D sin-cos embeddings.
    """
    layout = TokenLayout.from_model(model)
    kind = model.config.position_embedding
    if kind == "none":
        raise ValueError(
            "This model has no position embedding (position_embedding='none'), so there is nothing to compare. "
            "Received: position_embedding='none'"
        )
    layer = model.get_layer("pos_embed")
    if kind == "sincos":
        return sincos_2d_table(layout.grid_size, model.config.hidden_dim, layer.temperature).astype(np.float32)
    table = np.asarray(layer.embeddings, dtype=np.float32)[0]
    table = table[layer.num_prefix_tokens :]
    if table.shape[0] != layout.num_patches:
        raise ValueError(
            f"The position table has {table.shape[0]} patch entries but the grid {layout.grid_size} has "
            f"{layout.num_patches}. Received: table.shape={table.shape}"
        )
    return table


def position_embedding_similarity(model: Any) -> np.ndarray:
    """Cosine similarity of every patch's position embedding with every other's.

    Args:
        model: a keras_vit ViT/DeiT with learned or sin-cos position embeddings.

    Returns:
        `(rows, columns, rows, columns)`: entry `[r, c]` is the similarity map
        of patch (r, c) with the whole grid; values in [-1, 1].
    """
    layout = TokenLayout.from_model(model)
    table = patch_position_table(model).astype(np.float64)
    unit = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    return similarity.reshape(*layout.grid_size, *layout.grid_size).astype(np.float32)
