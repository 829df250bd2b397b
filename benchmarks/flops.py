"""Analytic FLOP counts of a ViT forward pass (2 x multiply-accumulates).

Only the matrix products are counted (patch projection, qkv, attention logits
and mixing, output projection, MLP, head); layer norms, softmax, GELU and
additions are a few percent at these sizes and left out, as timm and the
papers do. A training step is counted as three forward passes (the backward
pass costs about twice the forward).

The plain ViT is counted by formula (`vit_forward_matmuls`). Any other
registered model (a `peers.family_arch`: MAP heads, SwiGLU, rotary and
relative-bias attention, register tokens, ...) is counted from timm's own
forward of the same name, run on the "meta" device (shapes only, no memory,
no arithmetic): the products it dispatches are recorded as they run
(`timm_forward_matmuls`). One recorder covers all 247 names and every option
timm adds, where a formula per family would have to be kept in step with
each; rotary embeddings and relative position bias are elementwise and so,
like softmax, not counted. timm must be imported before TensorFlow.
"""

from __future__ import annotations

import functools
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


def forward_matmuls(arch: dict[str, Any], batch: int = 1) -> list[tuple[int, int, int, int]]:
    """The forward's products of a plain ViT architecture or of a `peers.family_arch` (via timm's forward)."""
    if "registry_name" in arch:
        return list(_timm_products(arch["registry_name"], tuple(sorted(arch["overrides"].items())), batch))
    return vit_forward_matmuls(arch, batch)


def forward_flops(arch: dict[str, Any]) -> int:
    """FLOPs (2 x MACs) of one image's forward pass through any architecture `forward_matmuls` takes."""
    return 2 * sum(count * m * k * n for count, m, k, n in forward_matmuls(arch))


def train_flops(arch: dict[str, Any]) -> int:
    """FLOPs of one image's training step (three forwards) through any architecture `forward_matmuls` takes."""
    return 3 * forward_flops(arch)


def timm_forward_matmuls(name: str, batch: int = 1, **overrides) -> list[tuple[int, int, int, int]]:
    """The matrix products of timm's forward of the registered `name`, recorded on the meta device.

    Args:
        name: a timm (and keras_vit) model name, e.g. "eva02_small_patch14_224".
        batch: images per forward pass.
        **overrides: keras_vit overrides (`depth`, `image_size`, `num_classes`; `peers.FAMILY_OVERRIDES`).

    Returns:
        `(count, m, k, n)` per product in the order timm runs them, as `vit_forward_matmuls`.
    """
    return list(_timm_products(name, tuple(sorted(overrides.items())), batch))


@functools.lru_cache(maxsize=32)
def _timm_products(name: str, overrides: tuple, batch: int) -> tuple[tuple[int, int, int, int], ...]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from benchmarks import peers

    arch = peers.family_arch(name, **dict(overrides))
    products: list[tuple[int, int, int, int]] = []

    class RecordProducts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            products.extend(_as_products(str(func.overloadpacket), args, out))
            return out

    with torch.device("meta"):
        model = peers.timm_by_name(arch).eval()
        images = torch.empty(batch, arch["num_channels"], *arch["image_size"])
    with RecordProducts(), torch.no_grad():
        model(images)
    return tuple(products)


_ELEMENTWISE_LOOKALIKES = ("aten.addcmul", "aten.addcdiv")


def _as_products(op: str, args: tuple, out) -> list[tuple[int, int, int, int]]:
    """`(count, m, k, n)` of one dispatched torch op; [] for an op without a matrix product."""
    shapes = [tuple(a.shape) for a in args if hasattr(a, "shape")]
    if op in ("aten.mm", "aten.addmm"):
        (m, k), (_, n) = shapes[-2:]
        return [(1, m, k, n)]
    if op in ("aten.bmm", "aten.baddbmm"):
        (count, m, k), (_, _, n) = shapes[-2:]
        return [(count, m, k, n)]
    if op == "aten.convolution":
        (batch, channels, *_), (out_channels, _, *kernel) = shapes[:2]
        positions = batch * int(out.shape[2]) * int(out.shape[3])
        return [(1, positions, channels * kernel[0] * kernel[1] // args[8], out_channels)]
    if "scaled_dot_product" in op:
        (batch, heads, length, dim), (_, _, source, _), (*_, value_dim) = shapes[:3]
        return [(batch * heads, length, dim, source), (batch * heads, length, source, value_dim)]
    if any(word in op for word in ("mm", "conv", "matmul", "linear", "einsum")) and op not in _ELEMENTWISE_LOOKALIKES:
        raise ValueError(f"A matrix product the FLOP recorder does not know: add it to `_as_products`. Received: {op}")
    return []
