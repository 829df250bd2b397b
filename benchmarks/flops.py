"""Analytic FLOP counts of a ViT forward pass (2 x multiply-accumulates).

Only the matrix products are counted (patch projection, qkv, attention logits
and mixing, output projection, MLP, head); layer norms, softmax, GELU and
additions are a few percent at these sizes and left out, as timm and the
papers do. A training step is counted as three forward passes (the backward
pass costs about twice the forward).
"""

from __future__ import annotations

from typing import Any


def vit_forward_macs(arch: dict[str, Any]) -> int:
    """Multiply-accumulates of one image through a ViT with a class token.

    Args:
        arch: dict with `image_size`, `patch_size`, `hidden_dim`, `depth`,
            `mlp_dim`, `num_classes` and optionally `num_channels` (3).
            Sizes may be ints or (height, width) pairs.

    Returns:
        The MAC count per image (int).
    """
    image, patch = _pair(arch["image_size"]), _pair(arch["patch_size"])
    for key in ("hidden_dim", "depth", "mlp_dim"):
        if not isinstance(arch.get(key), int) or arch[key] <= 0:
            raise ValueError(f"`{key}` must be a positive int. Received: {key}={arch.get(key)!r}")
    d, m = arch["hidden_dim"], arch["mlp_dim"]
    channels = arch.get("num_channels", 3)
    patches = (image[0] // patch[0]) * (image[1] // patch[1])
    tokens = patches + 1  # the class token
    macs = patches * patch[0] * patch[1] * channels * d  # patch projection
    per_block = tokens * d * 3 * d  # fused qkv
    per_block += 2 * tokens * tokens * d  # q k^T and weights @ v, all heads together
    per_block += tokens * d * d  # output projection
    per_block += 2 * tokens * d * m  # fc1 and fc2
    macs += arch["depth"] * per_block
    macs += d * arch.get("num_classes", 0)  # head on the pooled token
    return macs


def vit_forward_flops(arch: dict[str, Any]) -> int:
    """FLOPs (2 x MACs) of one image's forward pass; see `vit_forward_macs`."""
    return 2 * vit_forward_macs(arch)


def vit_train_flops(arch: dict[str, Any]) -> int:
    """FLOPs of one image's training step: forward plus a backward of twice its cost."""
    return 3 * vit_forward_flops(arch)


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (value[0], value[1])
    raise ValueError(f"Expected an int or a (height, width) pair of ints. Received: {value!r}")
