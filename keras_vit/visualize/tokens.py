"""Where each token sits: the shared bookkeeping of every attention and feature picture.

A ViT's sequence is `[class, distillation, registers..., patches]`; only the
patch tokens have a place in the image. Every picture in this package maps
patch tokens back to the `(rows, columns)` patch grid and leaves the prefix
tokens (register tokens included) out of the maps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

TOKENS = ("cls", "dist", "mean")


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Token order and patch geometry of a keras_vit ViT/DeiT, EVA or BEiT.

    Attributes:
        grid_size: (rows, columns) of the patch grid.
        patch_size: (height, width) of a patch in pixels.
        class_token: whether token 0 is a class token.
        distillation_token: whether a DeiT distillation token follows it.
        num_register_tokens: register tokens after them (never drawn).
        depth: number of encoder blocks.
        num_heads: attention heads per block, as its attention weights hold them (a parallel block's
            branches side by side).
    """

    grid_size: tuple[int, int]
    patch_size: tuple[int, int]
    class_token: bool
    distillation_token: bool
    num_register_tokens: int
    depth: int
    num_heads: int

    @classmethod
    def from_model(cls, model: Any) -> TokenLayout:
        """Reads the layout from a `keras_vit` ViT/DeiT, EVA or BEiT, or raises a clear `ValueError`.

        Only ViT/DeiT configs have a distillation token; the other families'
        prefix is a class token (when they have one) and registers.
        """
        check_vit(model)
        c = model.config
        return cls(
            grid_size=tuple(c.grid_size),
            patch_size=tuple(c.patch_size),
            class_token=bool(c.class_token),
            distillation_token=bool(getattr(c, "distillation_token", False)),
            num_register_tokens=int(getattr(c, "num_register_tokens", 0)),
            depth=int(c.depth),
            num_heads=int(c.num_heads) * _parallel_attentions(c),
        )

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + int(self.distillation_token) + self.num_register_tokens

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.grid_size[0] * self.patch_size[0], self.grid_size[1] * self.patch_size[1])

    def query_rows(self, matrix: np.ndarray, token: str) -> np.ndarray:
        """The attention row(s) of `token` over all keys: `(..., tokens, tokens)` -> `(..., tokens)`.

        Args:
            matrix: attention or rollout matrices, queries on axis -2.
            token: "cls" (class-token row), "dist" (distillation-token row) or
                "mean" (mean of the patch-token rows; for models without a class token).

        Returns:
            `(..., tokens)` weights over keys.
        """
        if token == "cls":
            if not self.class_token:
                raise ValueError(
                    "token='cls' needs a model with a class token; this one pools patch tokens. "
                    "Use token='mean'. Received: token='cls'"
                )
            return matrix[..., 0, :]
        if token == "dist":
            if not self.distillation_token:
                raise ValueError(
                    "token='dist' needs a distilled DeiT (distillation_token=True). Use token='cls' or "
                    "token='mean'. Received: token='dist'"
                )
            return matrix[..., int(self.class_token), :]
        if token == "mean":
            return matrix[..., self.num_prefix_tokens :, :].mean(axis=-2)
        raise ValueError(f"`token` must be one of {TOKENS}. Received: token={token!r}")

    def patch_grid(self, row: np.ndarray) -> np.ndarray:
        """Keeps the patch keys of `(..., tokens)` and lays them out as `(..., rows, columns)`."""
        if row.shape[-1] != self.num_tokens:
            raise ValueError(
                f"Expected {self.num_tokens} tokens ({self.num_prefix_tokens} prefix + {self.num_patches} "
                f"patches), received {row.shape[-1]}. Received: shape={row.shape}"
            )
        return row[..., self.num_prefix_tokens :].reshape(*row.shape[:-1], *self.grid_size)

    def patch_centres(self) -> np.ndarray:
        """`(num_patches, 2)` pixel coordinates (y, x) of the patch centres, row-major."""
        rows, cols = np.meshgrid(np.arange(self.grid_size[0]), np.arange(self.grid_size[1]), indexing="ij")
        y = (rows.reshape(-1) + 0.5) * self.patch_size[0]
        x = (cols.reshape(-1) + 0.5) * self.patch_size[1]
        return np.stack([y, x], axis=1).astype(np.float64)


def _parallel_attentions(config: Any) -> int:
    """Attention branches per block: timm's ParallelThingsBlock runs `num_parallel` of them side by side."""
    return int(config.num_parallel) if getattr(config, "block_kind", None) == "parallel_things" else 1


def check_vit(model: Any) -> None:
    """Raises a `ValueError` when `model` cannot give attention weights (e.g. a plain CNN)."""
    config = getattr(model, "config", None)
    needed = ("grid_size", "patch_size", "num_prefix_tokens", "depth", "num_heads")
    if not callable(getattr(model, "forward_intermediates", None)) or not all(hasattr(config, a) for a in needed):
        name = getattr(model, "name", None)
        raise ValueError(
            "keras_vit.visualize needs a keras_vit ViT/DeiT, whose `forward_intermediates(images)` returns "
            f"per-block attention weights. Received: model={type(model).__name__}(name={name!r}), which has no "
            "attention outputs. Build one with keras_vit.ViT(...) / keras_vit.create_model(name) or load a "
            "saved keras_vit model."
        )


def check_layer(layer: int, depth: int) -> int:
    """Normalises a block index (negative counts from the end) or raises a `ValueError`."""
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -depth <= layer < depth:
        raise ValueError(
            f"`layer` must be an int in [{-depth}, {depth - 1}] for a model with depth {depth}. "
            f"Received: layer={layer!r}"
        )
    return int(layer) % depth


def as_image_batch(images: Any, model: Any) -> np.ndarray:
    """Validates a float batch `(batch, height, width, channels)` for `model`; returns float32 numpy."""
    array = np.asarray(images)
    if array.ndim != 4:
        raise ValueError(
            "Expected images of rank 4 (batch, height, width, channels). "
            f"Received: images.shape={array.shape}. Add a batch axis with images[None] for one image."
        )
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"Expected numeric images. Received: images.dtype={array.dtype}")
    expected = (*model.config.image_size, model.config.num_channels)
    if array.shape[1:] != expected:
        raise ValueError(
            f"Expected images of shape (batch, {expected[0]}, {expected[1]}, {expected[2]}) for this model. "
            f"Received: images.shape={array.shape}. Resize the images, or use "
            f"model.with_image_size({array.shape[1:3]}) to resample the position embeddings."
        )
    return array.astype(np.float32)


def run_intermediates(model: Any, images: Any) -> dict[str, Any]:
    """Runs `model.forward_intermediates` once; every output as numpy.

    Returns:
        dict with "attention" and "blocks" (lists over depth, numpy), "images"
        (the validated float32 batch) and "layout" (`TokenLayout`).
    """
    layout = TokenLayout.from_model(model)
    batch = as_image_batch(images, model)
    outputs = model.forward_intermediates(batch)
    attention = [np.asarray(a, dtype=np.float32) for a in outputs["attention"]]
    blocks = [np.asarray(b, dtype=np.float32) for b in outputs["blocks"]]
    return {"attention": attention, "blocks": blocks, "images": batch, "layout": layout}


def intermediates_for(model: Any, images: Any, intermediates: dict[str, Any] | None) -> dict[str, Any]:
    """Reuses `intermediates` from `run_intermediates` when given (one forward pass for many pictures)."""
    if intermediates is not None:
        return intermediates
    return run_intermediates(model, images)
