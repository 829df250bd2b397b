"""Per-block activation statistics: which blocks, tokens and channels activate most.

Large ViTs grow a few "massive" channels and high-norm tokens (Darcet et al.
2023, https://arxiv.org/abs/2309.16588, the reason for register tokens);
these statistics make that visible for a user's own model and images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_vit.visualize.tokens import TokenLayout, intermediates_for


def activation_statistics(
    model: Any, images: Any, top_k: int = 5, intermediates: dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Summaries of every block's output tokens for a batch.

    Args:
        model: a keras_vit ViT/DeiT.
        images: float `(batch, height, width, channels)`.
        top_k: int. How many of the most active channels to report per block. Defaults to 5.
        intermediates: optional output of `run_intermediates` to reuse.

    Returns:
        dict of numpy arrays:
        "token_norms" `(batch, depth, tokens)`: L2 norm of every token after each block;
        "patch_norms" `(batch, depth, rows, columns)`: the same for patch tokens on the grid
        (feature-map norms);
        "mean_patch_norm", "max_patch_norm" `(depth,)`: over the batch and patches;
        "prefix_norm" `(depth, num_prefix_tokens)`: mean norm of each prefix token
        (class, distillation, registers);
        "channel_mean_abs" `(depth, dim)`: mean |activation| per channel over batch and tokens;
        "top_channels", "top_values" `(depth, top_k)`: the most active channels and their mean |activation|;
        "most_active_block": index of the block with the largest mean patch norm.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
        raise ValueError(f"`top_k` must be a positive int. Received: top_k={top_k!r}")
    out = intermediates_for(model, images, intermediates)
    layout: TokenLayout = out["layout"]
    blocks = np.stack(out["blocks"], axis=1).astype(np.float64)  # (batch, depth, tokens, dim)
    top_k = min(top_k, blocks.shape[-1])
    norms = np.linalg.norm(blocks, axis=-1)
    patch_norms = layout.patch_grid(norms)
    channel_mean_abs = np.abs(blocks).mean(axis=(0, 2))
    top_channels = np.argsort(-channel_mean_abs, axis=-1, kind="stable")[:, :top_k]
    mean_patch = patch_norms.mean(axis=(0, 2, 3))
    return {
        "token_norms": norms.astype(np.float32),
        "patch_norms": patch_norms.astype(np.float32),
        "mean_patch_norm": mean_patch.astype(np.float32),
        "max_patch_norm": patch_norms.max(axis=(0, 2, 3)).astype(np.float32),
        "prefix_norm": norms[:, :, : layout.num_prefix_tokens].mean(axis=0).astype(np.float32),
        "channel_mean_abs": channel_mean_abs.astype(np.float32),
        "top_channels": top_channels,
        "top_values": np.take_along_axis(channel_mean_abs, top_channels, axis=-1).astype(np.float32),
        "most_active_block": np.asarray(int(np.argmax(mean_patch))),
    }
