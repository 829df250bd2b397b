"""Analytic FLOP counts of a ViT forward pass (2 x multiply-accumulates).

Only the matrix products are counted (patch projection, qkv, attention logits
and mixing, output projection, MLP, head); layer norms, softmax, GELU and
additions are a few percent at these sizes and left out, as timm and the
papers do. A training step is counted as three forward passes (the backward
pass costs about twice the forward).
"""

from __future__ import annotations

from typing import Any


def vit_forward_matmuls(arch: dict[str, Any], batch: int = 1) -> list[tuple[int, int, int, int]]:
    """The matrix products of a forward pass of `batch` images through a ViT with a class token.

    Args:
        arch: dict with `image_size`, `patch_size`, `hidden_dim`, `depth`,
            `mlp_dim`, `num_classes` and optionally `num_channels` (3) and
            `num_heads` (1; the attention's products per head). Sizes may be
            ints or (height, width) pairs.
        batch: images per forward pass.

    Returns:
        `(count, m, k, n)` per product as the model runs them: `count`
        independent `(m, k) @ (k, n)` matmuls (a batched matmul when > 1).
    """
    image, patch = _pair(arch["image_size"]), _pair(arch["patch_size"])
    for key in ("hidden_dim", "depth", "mlp_dim"):
        if not isinstance(arch.get(key), int) or arch[key] <= 0:
            raise ValueError(f"`{key}` must be a positive int. Received: {key}={arch.get(key)!r}")
    d, m, heads = arch["hidden_dim"], arch["mlp_dim"], arch.get("num_heads", 1)
    if not isinstance(heads, int) or heads <= 0 or d % heads:
        raise ValueError(f"`num_heads` must be a positive int dividing hidden_dim={d}. Received: num_heads={heads!r}")
    patches = (image[0] // patch[0]) * (image[1] // patch[1])
    tokens = patches + 1  # the class token
    rows = batch * tokens
    products = [(1, batch * patches, patch[0] * patch[1] * arch.get("num_channels", 3), d)]  # patch projection
    block = [
        (1, rows, d, 3 * d),  # fused qkv
        (batch * heads, tokens, d // heads, tokens),  # q k^T
        (batch * heads, tokens, tokens, d // heads),  # weights @ v
        (1, rows, d, d),  # output projection
        (1, rows, d, m),
        (1, rows, m, d),
    ]  # fc1, fc2
    products += block * arch["depth"]
    if arch.get("num_classes", 0):
        products.append((1, batch, d, arch["num_classes"]))  # head on the pooled token
    return products


def vit_forward_macs(arch: dict[str, Any]) -> int:
    """Multiply-accumulates of one image through a ViT with a class token (arch as in `vit_forward_matmuls`)."""
    return sum(count * m * k * n for count, m, k, n in vit_forward_matmuls(arch))


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
