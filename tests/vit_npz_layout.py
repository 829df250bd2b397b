"""Random arrays named and shaped as in the original ViT / AugReg `.npz` files (Flax names, `(in, out)` kernels).

Shared by the `.npz` parity tests and the README fixtures; the layout is the
one timm's own `.npz` loader reads (`tests/parity/test_npz_parity.py`).
"""

from __future__ import annotations

import numpy as np


def original_vit_arrays(
    rng: np.random.Generator,
    *,
    dim: int,
    depth: int,
    heads: int,
    mlp: int,
    patch: int,
    grid: int,
    classes: int,
    representation_size: int | None = None,
    scale: float = 0.02,
) -> dict[str, np.ndarray]:
    """One class token, a `grid x grid` patch grid, `depth` encoder blocks and a `classes`-way head."""

    def normal(*shape, mean=0.0):
        return (mean + scale * rng.standard_normal(shape)).astype("float32")

    head_dim = dim // heads
    w = {
        "embedding/kernel": normal(patch, patch, 3, dim),
        "embedding/bias": normal(dim),
        "cls": normal(1, 1, dim),
        "Transformer/posembed_input/pos_embedding": normal(1, 1 + grid * grid, dim),
        "Transformer/encoder_norm/scale": normal(dim, mean=1.0),
        "Transformer/encoder_norm/bias": normal(dim),
    }
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            w[f"{b}{ln}/scale"], w[f"{b}{ln}/bias"] = normal(dim, mean=1.0), normal(dim)
        for n in ("query", "key", "value"):
            w[f"{b}MultiHeadDotProductAttention_1/{n}/kernel"] = normal(dim, heads, head_dim)
            w[f"{b}MultiHeadDotProductAttention_1/{n}/bias"] = normal(heads, head_dim)
        w[f"{b}MultiHeadDotProductAttention_1/out/kernel"] = normal(heads, head_dim, dim)
        w[f"{b}MultiHeadDotProductAttention_1/out/bias"] = normal(dim)
        w[f"{b}MlpBlock_3/Dense_0/kernel"], w[f"{b}MlpBlock_3/Dense_0/bias"] = normal(dim, mlp), normal(mlp)
        w[f"{b}MlpBlock_3/Dense_1/kernel"], w[f"{b}MlpBlock_3/Dense_1/bias"] = normal(mlp, dim), normal(dim)
    features = dim
    if representation_size:
        w["pre_logits/kernel"], w["pre_logits/bias"] = normal(dim, representation_size), normal(representation_size)
        features = representation_size
    w["head/kernel"], w["head/bias"] = normal(features, classes), normal(classes)
    return w
