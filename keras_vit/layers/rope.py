"""2D rotary position embeddings (RoPE) for patch grids: axial (EVA-02, DINOv3, ROPE-ViT) and mixed (ROPE-ViT).

A query or key channel pair is rotated by an angle proportional to the
patch's row or column coordinate (Su et al. 2021, https://arxiv.org/abs/2104.09864;
Heo et al. 2024, https://arxiv.org/abs/2403.13298). The tables are computed
in the graph from the image's size, so one model serves any resolution.

Each embedding is `concat([sin, cos], -1)` over `2 * head_dim` channels, as
timm's `RotaryEmbeddingCat` gives it, and `apply_rotary` rotates `(..., tokens,
head_dim)` queries or keys with it.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_vit.layers._serializable import serializable
from keras_vit.validation import check_choice, check_positive_int, to_pair

GRID_TYPES = ("index", "centered")
GRID_INDEXING = ("ij", "xy")


def rotate_pairs(x, rotate_half: bool):
    """The 90-degree partner of each channel: `[-x1, x0, -x3, x2, ...]` (interleaved) or `[-x_hi, x_lo]` (half)."""
    if rotate_half:
        low, high = ops.split(x, 2, axis=-1)
        return ops.concatenate([-high, low], axis=-1)
    shape = ops.shape(x)
    pairs = ops.reshape(x, (-1, x.shape[-1] // 2, 2))
    rotated = ops.stack([-pairs[..., 1], pairs[..., 0]], axis=-1)
    return ops.reshape(rotated, shape)


def apply_rotary(x, embedding, rotate_half: bool = False):
    """Rotates `x` `(..., tokens, head_dim)` by `embedding` `(..., tokens, 2 * head_dim)` (`[sin, cos]`).

    The rotation is computed in float32 and cast back to `x`'s dtype.
    """
    sin, cos = ops.split(ops.cast(embedding, "float32"), 2, axis=-1)
    x32 = ops.cast(x, "float32")
    return ops.cast(x32 * cos + rotate_pairs(x32, rotate_half) * sin, x.dtype)


def _layout(angles, rotate_half: bool):
    """Per-frequency values `(..., d/2)` to the `(..., d)` layout: `[f0, f1, .., f0, f1, ..]` or `[f0, f0, f1, f1, ..]`."""
    if rotate_half:
        return ops.concatenate([angles, angles], axis=-1)
    return ops.reshape(ops.stack([angles, angles], axis=-1), (-1, angles.shape[-1] * 2))


def grid_coordinates(
    grid_h,
    grid_w,
    grid_type: str = "index",
    grid_offset: float = 0.0,
    grid_indexing: str = "ij",
    ref_feat_shape: tuple[int, int] | None = None,
):
    """Coordinates `(grid_h * grid_w, 2)` of the patches, row-major, float32.

    "index": `arange(s) + offset`, rescaled to `ref_feat_shape` when given
    (EVA's fine-tuning rule); "centered": `(arange(0.5, s) + offset) / s` mapped
    to [-1, 1] (DINOv3). Channels are (row, column) for "ij", (column, row) for "xy".
    """
    sizes = [ops.cast(grid_h, "float32"), ops.cast(grid_w, "float32")]
    axes = [ops.cast(ops.arange(grid_h), "float32"), ops.cast(ops.arange(grid_w), "float32")]
    if grid_type == "centered":
        axes = [(a + 0.5 + grid_offset) / s for a, s in zip(axes, sizes)]
    else:
        axes = [a + grid_offset for a in axes]
        if ref_feat_shape is not None:
            axes = [a / s * r for a, s, r in zip(axes, sizes, ref_feat_shape)]
    rows = ops.broadcast_to(axes[0][:, None], (grid_h, grid_w))
    cols = ops.broadcast_to(axes[1][None, :], (grid_h, grid_w))
    channels = [rows, cols] if grid_indexing == "ij" else [cols, rows]
    coords = ops.reshape(ops.stack(channels, axis=-1), (-1, 2))
    return 2.0 * coords - 1.0 if grid_type == "centered" else coords


def _image_grid(images, patch_size):
    shape = ops.shape(images)
    return shape[1] // patch_size[0], shape[2] // patch_size[1]


@serializable
class AxialRotaryEmbedding(keras.layers.Layer):
    """Axial 2D RoPE: the first half of the frequencies follow one axis, the second half the other.

    timm's `RotaryEmbeddingCat` (EVA-02, ROPE-ViT axial; `grid_type="index"`,
    inverse frequencies `temperature ** -(i / (head_dim / 4))`) and
    `RotaryEmbeddingDinoV3` (`grid_type="centered"`, periods
    `temperature ** (2 i / (head_dim / 2))`). No weights.

    Args:
        head_dim: int. Channels per attention head; a multiple of 4.
        patch_size: int or (int, int). Pixels per patch, to read the grid from the images.
        temperature: float. Frequency base. Defaults to 10000.
        grid_type: "index" or "centered". Defaults to "index".
        grid_offset: float. Added to every coordinate. Defaults to 0.
        grid_indexing: "ij" (row first) or "xy" (column first). Defaults to "ij".
        ref_feat_shape: (int, int) or None. Grid the model was pretrained on;
            "index" coordinates are rescaled to it (EVA). Defaults to None.
        rotate_half: bool. Half layout instead of interleaved pairs. Defaults to False.

    Call arguments:
        images: `(batch, height, width, channels)`; only the size is read.

    Returns:
        `(grid_h * grid_w, 2 * head_dim)` float32, `[sin, cos]`.
    """

    def __init__(
        self,
        head_dim: int,
        patch_size=16,
        temperature: float = 10000.0,
        grid_type: str = "index",
        grid_offset: float = 0.0,
        grid_indexing: str = "ij",
        ref_feat_shape=None,
        rotate_half: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.head_dim = check_positive_int(head_dim, "head_dim")
        if head_dim % 4:
            raise ValueError(f"2D rotary embeddings need head_dim divisible by 4. Received: head_dim={head_dim}")
        self.patch_size = to_pair(patch_size, "patch_size")
        self.temperature = float(temperature)
        self.grid_type = check_choice(grid_type, "grid_type", GRID_TYPES)
        self.grid_offset = float(grid_offset)
        self.grid_indexing = check_choice(grid_indexing, "grid_indexing", GRID_INDEXING)
        self.ref_feat_shape = None if ref_feat_shape is None else to_pair(ref_feat_shape, "ref_feat_shape")
        self.rotate_half = bool(rotate_half)

    def inverse_frequencies(self) -> np.ndarray:
        """Angle per unit of coordinate for each of the `head_dim / 4` frequencies, float32."""
        n = self.head_dim // 4
        if self.grid_type == "centered":
            periods = self.temperature ** (2.0 * np.arange(n, dtype=np.float32) / (self.head_dim // 2))
            return (2 * math.pi / periods).astype(np.float32)
        return (1.0 / self.temperature ** (np.arange(n, dtype=np.float32) / n)).astype(np.float32)

    def call(self, images):
        grid_h, grid_w = _image_grid(images, self.patch_size)
        coords = grid_coordinates(
            grid_h, grid_w, self.grid_type, self.grid_offset, self.grid_indexing, self.ref_feat_shape
        )
        angles = coords[:, :, None] * ops.convert_to_tensor(self.inverse_frequencies())[None, None, :]
        angles = ops.reshape(angles, (-1, self.head_dim // 2))
        return ops.concatenate(
            [_layout(ops.sin(angles), self.rotate_half), _layout(ops.cos(angles), self.rotate_half)], axis=-1
        )

    def compute_output_spec(self, images):
        h, w = images.shape[1], images.shape[2]
        n = None if h is None or w is None else (h // self.patch_size[0]) * (w // self.patch_size[1])
        return keras.KerasTensor((n, 2 * self.head_dim), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            head_dim=self.head_dim,
            patch_size=self.patch_size,
            temperature=self.temperature,
            grid_type=self.grid_type,
            grid_offset=self.grid_offset,
            grid_indexing=self.grid_indexing,
            ref_feat_shape=self.ref_feat_shape,
            rotate_half=self.rotate_half,
        )
        return config


def mixed_frequencies_init(head_dim: int, depth: int, num_heads: int, temperature: float, seed=None) -> np.ndarray:
    """ROPE-ViT's initial frequencies `(2, depth, num_heads, head_dim / 2)`: magnitudes rotated by a random angle."""
    magnitude = 1.0 / temperature ** (np.arange(0, head_dim, 4, dtype=np.float32) / head_dim)
    angles = np.random.default_rng(seed).uniform(0, 2 * np.pi, (depth, num_heads, 1)).astype(np.float32)
    fx = np.concatenate([magnitude * np.cos(angles), magnitude * np.cos(angles + np.pi / 2)], axis=-1)
    fy = np.concatenate([magnitude * np.sin(angles), magnitude * np.sin(angles + np.pi / 2)], axis=-1)
    return np.stack([fx, fy]).astype(np.float32)


@serializable
class MixedRotaryEmbedding(keras.layers.Layer):
    """Mixed 2D RoPE (ROPE-ViT): learned frequencies per block and head, mixing both axes.

    timm's `RotaryEmbeddingMixed`: weight `freqs` `(2, depth, num_heads,
    head_dim / 2)`; the angle of frequency `f` at patch `(x, y)` is
    `x * freqs[0, ..., f] + y * freqs[1, ..., f]` (x the column for "xy"
    indexing). Interleaved layout.

    Args:
        head_dim: int. Channels per head; a multiple of 4.
        depth: int. Number of blocks (one set of frequencies each).
        num_heads: int. Attention heads.
        patch_size: int or (int, int). Pixels per patch.
        temperature: float. Base of the initial magnitudes. Defaults to 10.
        grid_indexing: "xy" or "ij". Defaults to "xy".

    Call arguments:
        images: `(batch, height, width, channels)`; only the size is read.
        block_index: int or None. One block's embedding, or every block's.

    Returns:
        `(depth, num_heads, grid_h * grid_w, 2 * head_dim)` float32, `[sin, cos]`
        (without the depth axis for one block).
    """

    def __init__(
        self,
        head_dim: int,
        depth: int,
        num_heads: int,
        patch_size=16,
        temperature: float = 10.0,
        grid_indexing: str = "xy",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.head_dim = check_positive_int(head_dim, "head_dim")
        if head_dim % 4:
            raise ValueError(f"Mixed rotary embeddings need head_dim divisible by 4. Received: head_dim={head_dim}")
        self.depth = check_positive_int(depth, "depth")
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.patch_size = to_pair(patch_size, "patch_size")
        self.temperature = float(temperature)
        self.grid_indexing = check_choice(grid_indexing, "grid_indexing", GRID_INDEXING)

    def build(self, input_shape=None):
        initial = mixed_frequencies_init(self.head_dim, self.depth, self.num_heads, self.temperature)
        self.freqs = self.add_weight(
            shape=initial.shape, initializer=keras.initializers.Constant(initial), name="freqs", dtype="float32"
        )

    def call(self, images, block_index: int | None = None):
        grid_h, grid_w = _image_grid(images, self.patch_size)
        coords = grid_coordinates(grid_h, grid_w, "index", 0.0, self.grid_indexing)
        freqs = ops.cast(self.freqs, "float32")
        if block_index is not None:
            freqs = freqs[:, block_index]
        angles = coords[:, 0, None] * freqs[0][..., None, :] + coords[:, 1, None] * freqs[1][..., None, :]
        leading = tuple(angles.shape[:-2])
        sin = ops.reshape(ops.stack([ops.sin(angles)] * 2, axis=-1), (*leading, -1, self.head_dim))
        cos = ops.reshape(ops.stack([ops.cos(angles)] * 2, axis=-1), (*leading, -1, self.head_dim))
        return ops.concatenate([sin, cos], axis=-1)

    def compute_output_spec(self, images, block_index: int | None = None):
        h, w = images.shape[1], images.shape[2]
        n = None if h is None or w is None else (h // self.patch_size[0]) * (w // self.patch_size[1])
        leading = (self.num_heads,) if block_index is not None else (self.depth, self.num_heads)
        return keras.KerasTensor((*leading, n, 2 * self.head_dim), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            head_dim=self.head_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            patch_size=self.patch_size,
            temperature=self.temperature,
            grid_indexing=self.grid_indexing,
        )
        return config
