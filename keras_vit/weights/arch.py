"""Reads the architecture a timm-keyed state dict implies, for converting files without naming a model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from keras_vit.weights.errors import CheckpointError

# The tensors whose shapes define the architecture, and their number of dimensions in timm's layout.
_NDIMS = {
    "patch_embed.proj.weight": 4,
    "blocks.0.mlp.fc1.weight": 2,
    "blocks.0.attn.q_norm.weight": 1,
    "reg_token": 3,
    "pos_embed": 3,
    "pre_logits.fc.weight": 2,
    "head.weight": 2,
}
# Heads of the standard widths (ViT paper table 1; Ti/S from DeiT), used when the file cannot tell.
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def infer_arch(
    state: dict[str, np.ndarray], num_heads: int | None = None, layer_norm_epsilon: float = 1e-6
) -> dict[str, Any]:
    """`keras_vit.ViT` arguments that fit a timm state dict.

    Everything but the head count follows from tensor shapes; heads come from
    `num_heads`, from qk-norm weights, or from the standard ViT widths. The
    LayerScale init value does not matter for loaded weights (1e-5 is used).

    Args:
        state: timm key -> array.
        num_heads: int or None. Attention heads, when the width is not standard.
        layer_norm_epsilon: float. Not stored in checkpoints. Defaults to 1e-6 (timm ViT).

    Returns:
        Keyword arguments for `keras_vit.ViT`.
    """
    if "patch_embed.proj.weight" not in state:
        raise CheckpointError(
            "Cannot infer an architecture: the state dict has no 'patch_embed.proj.weight'. "
            "Name the model instead (e.g. --model vit_base_patch16_224)."
        )
    for key, ndim in _NDIMS.items():
        if key in state and np.ndim(state[key]) != ndim:
            raise CheckpointError(
                f"Cannot infer an architecture: '{key}' has shape {np.shape(state[key])}, where a ViT has a "
                f"{ndim}-D tensor. The file is corrupt or not a ViT; name the model to see every mismatch."
            )
    if "blocks.0.mlp.fc1.weight" not in state:
        raise CheckpointError("Cannot infer an architecture: no 'blocks.0.mlp.fc1.weight'. Name the model instead.")
    dim, channels, ph, pw = state["patch_embed.proj.weight"].shape
    depth = 0
    while f"blocks.{depth}.norm1.weight" in state:
        depth += 1
    if depth == 0:
        raise CheckpointError("Cannot infer an architecture: no 'blocks.0.*' keys. Name the model instead.")
    if num_heads is None and "blocks.0.attn.q_norm.weight" in state:
        num_heads = int(dim // state["blocks.0.attn.q_norm.weight"].shape[0])
    if num_heads is None:
        if int(dim) not in STANDARD_HEADS:
            raise CheckpointError(
                f"Cannot infer the number of attention heads for width {dim}; pass num_heads "
                "(--num_heads) or name the model (--model)."
            )
        num_heads = STANDARD_HEADS[int(dim)]
    class_token, dist_token = "cls_token" in state, "dist_token" in state
    registers = int(state["reg_token"].shape[1]) if "reg_token" in state else 0
    prefix = int(class_token) + int(dist_token) + registers
    if "pos_embed" not in state:
        raise CheckpointError("Cannot infer an architecture without a learned 'pos_embed'. Name the model instead.")
    length = int(state["pos_embed"].shape[1])
    pos_embed_prefix = True
    side = math.isqrt(max(length - prefix, 0))
    if side * side != length - prefix or length - prefix == 0:
        side, pos_embed_prefix = math.isqrt(length), False
        if side * side != length:
            raise CheckpointError(
                f"pos_embed of length {length} with {prefix} prefix tokens is not a square grid; "
                "name the model (and image_size) instead."
            )
    fc_norm = "fc_norm.weight" in state
    attention_pool = "attn_pool.latent" in state
    arch = dict(
        image_size=(side * int(ph), side * int(pw)),
        patch_size=(int(ph), int(pw)),
        num_channels=int(channels),
        hidden_dim=int(dim),
        depth=depth,
        num_heads=int(num_heads),
        mlp_dim=int(state["blocks.0.mlp.fc1.weight"].shape[0]),
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        qk_norm="blocks.0.attn.q_norm.weight" in state,
        layer_scale_init=1e-5 if "blocks.0.ls1.gamma" in state else None,
        class_token=class_token,
        distillation_token=dist_token,
        num_register_tokens=registers,
        pos_embed_prefix=pos_embed_prefix or prefix == 0,
        pooling="map" if attention_pool else "token" if class_token and not fc_norm else "gap",
        fc_norm=fc_norm,
        pre_norm="norm_pre.weight" in state,  # CLIP
        patch_bias="patch_embed.proj.bias" in state,
        representation_size=int(state["pre_logits.fc.weight"].shape[0]) if "pre_logits.fc.weight" in state else None,
        num_classes=int(state["head.weight"].shape[0]) if "head.weight" in state else 0,
        layer_norm_epsilon=layer_norm_epsilon,
    )
    return arch
