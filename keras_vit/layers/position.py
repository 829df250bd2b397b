"""Position information for token sequences: learned, 1D sinusoidal and 2D sin-cos.

The learned embedding can be resampled to another patch grid (a new image size)
with the antialiased bicubic filter that timm uses, computed here in NumPy as
two separable resize matrices, so a resized model matches a resized timm model.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_vit.layers._serializable import serializable
from keras_vit.validation import to_pair


def _cubic(x, a: float, xp=np):
    """Keys' cubic convolution kernel with parameter `a`; `xp` is `numpy` or `keras.ops`."""
    x = xp.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return xp.where(x <= 1, near, xp.where(x < 2, far, xp.zeros_like(x)))


def _bicubic_weights(in_size, out_size, a: float, xp, dtype):
    """`(out_size, in_size)` antialiased bicubic weights, written once for NumPy and `keras.ops`.

    Half-pixel centres; the kernel widens by the scale when shrinking; taps
    past the border get no weight and each row is renormalised to sum to one
    (taps beyond the kernel's support are zero by the kernel itself).
    """
    as_float = (lambda v: ops.cast(v, dtype)) if xp is ops else (lambda v: np.asarray(v, dtype))
    scale = as_float(in_size) / as_float(out_size)
    widening = xp.maximum(scale, 1.0)
    centers = scale * (as_float(xp.arange(out_size)) + 0.5)
    taps = as_float(xp.arange(in_size)) + 0.5
    weights = _cubic((taps[None, :] - centers[:, None]) / widening, a, xp)
    return weights / xp.sum(weights, axis=1, keepdims=True)


def bicubic_resize_matrix(in_size: int, out_size: int, a: float = -0.5) -> np.ndarray:
    """`(out_size, in_size)` matrix of antialiased bicubic interpolation (half-pixel centres).

    Matches `torch.nn.functional.interpolate(mode="bicubic", antialias=True)`
    (Pillow's filter): the kernel widens by the scale when shrinking, taps past
    the border are dropped and the rest renormalised.
    """
    return _bicubic_weights(in_size, out_size, a, np, np.float64)


def bicubic_resize_matrix_in_graph(in_size, out_size, a: float = -0.5):
    """`bicubic_resize_matrix` with `keras.ops`, for sizes known only at run time (float32 tensor)."""
    return _bicubic_weights(in_size, out_size, a, ops, "float32")


def resample_position_embeddings(
    embeddings: np.ndarray,
    old_grid: tuple[int, int],
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 0,
) -> np.ndarray:
    """Resamples learned position embeddings `(1, prefix + h*w, dim)` to a new grid.

    Prefix-token entries are kept as they are; the grid part is interpolated
    bicubically (antialiased when shrinking). Works for non-square grids, and
    returns the input unchanged when the grid does not change.
    """
    embeddings = np.asarray(embeddings)
    old_grid, new_grid = to_pair(old_grid, "old_grid"), to_pair(new_grid, "new_grid")
    expected = num_prefix_tokens + old_grid[0] * old_grid[1]
    if embeddings.ndim != 3 or embeddings.shape[1] != expected:
        raise ValueError(
            f"Position embeddings of shape {embeddings.shape} do not fit a {old_grid[0]}x{old_grid[1]} "
            f"grid with {num_prefix_tokens} prefix tokens (expected (1, {expected}, dim))."
        )
    if old_grid == new_grid:
        return embeddings
    prefix, grid = embeddings[:, :num_prefix_tokens], embeddings[:, num_prefix_tokens:]
    grid = grid.reshape(embeddings.shape[0], old_grid[0], old_grid[1], -1).astype(np.float64)
    rows = bicubic_resize_matrix(old_grid[0], new_grid[0])
    cols = bicubic_resize_matrix(old_grid[1], new_grid[1])
    grid = np.einsum("ih,bhwd,jw->bijd", rows, grid, cols)
    grid = grid.reshape(embeddings.shape[0], new_grid[0] * new_grid[1], -1).astype(embeddings.dtype)
    return np.concatenate([prefix, grid], axis=1)


def resample_position_embeddings_in_graph(embeddings, old_grid: tuple[int, int], new_grid, num_prefix_tokens: int = 0):
    """`resample_position_embeddings` with `keras.ops`, to a grid `(rows, columns)` known only at run time.

    The same antialiased bicubic filter (timm's `resample_abs_pos_embed`), so
    it runs inside compiled graphs on every backend; resampling to the old
    grid gives the table back (the weights are then the identity).
    """
    dim = embeddings.shape[-1]
    prefix, grid = embeddings[:, :num_prefix_tokens], embeddings[:, num_prefix_tokens:]
    grid = ops.reshape(ops.cast(grid, "float32"), (old_grid[0], old_grid[1], dim))
    rows = bicubic_resize_matrix_in_graph(old_grid[0], new_grid[0])
    cols = bicubic_resize_matrix_in_graph(old_grid[1], new_grid[1])
    grid = ops.einsum("ih,hwd,jw->ijd", rows, grid, cols)
    grid = ops.cast(ops.reshape(grid, (1, -1, dim)), embeddings.dtype)
    return ops.concatenate([prefix, grid], axis=1)


@serializable
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embedding for a patch grid plus prefix tokens.

    Args:
        grid_size: int or (int, int). Patch grid (rows, columns).
        num_prefix_tokens: int. Leading tokens (class, distillation...) that have
            their own embedding entries. Defaults to `0`.
        initializer: initializer of the table. Defaults to truncated normal,
            stddev 0.02 (ViT/timm).
        patch_size: None or (int, int). Set it for any image size at run time
            (timm's `dynamic_img_size`): the call then also takes the images and
            resamples the table in the graph to their patch grid. Defaults to None.

    Call arguments:
        tokens: `(batch, num_prefix_tokens + rows * columns, dim)`.
        images: `(batch, height, width, channels)`, with `patch_size` only: the
            grid is `(height // patch rows, width // patch columns)`.

    Returns:
        `tokens` plus the embedding table.
    """

    def __init__(
        self, grid_size, num_prefix_tokens: int = 0, initializer="truncated_normal_002", patch_size=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.grid_size = to_pair(grid_size, "grid_size")
        self.patch_size = None if patch_size is None else to_pair(patch_size, "patch_size")
        if not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(
                f"`num_prefix_tokens` must be a non-negative int. Received: num_prefix_tokens={num_prefix_tokens!r}"
            )
        self.num_prefix_tokens = num_prefix_tokens
        self.initializer = initializer

    @property
    def sequence_length(self) -> int:
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]

    def build(self, tokens_shape, images_shape=None):
        if self.patch_size is None and tokens_shape[1] is not None and tokens_shape[1] != self.sequence_length:
            raise ValueError(
                f"PositionEmbedding for a {self.grid_size[0]}x{self.grid_size[1]} grid with "
                f"{self.num_prefix_tokens} prefix tokens expects {self.sequence_length} tokens, "
                f"received {tokens_shape[1]}. Resample it with `resample_position_embeddings`."
            )
        initializer = (
            keras.initializers.TruncatedNormal(stddev=0.02)
            if self.initializer == "truncated_normal_002"
            else keras.initializers.get(self.initializer)
        )
        self.embeddings = self.add_weight(
            shape=(1, self.sequence_length, tokens_shape[-1]), initializer=initializer, name="embeddings"
        )

    def call(self, tokens, images=None):
        if self.patch_size is None or images is None:
            return tokens + ops.cast(self.embeddings, tokens.dtype)
        grid = (ops.shape(images)[1] // self.patch_size[0], ops.shape(images)[2] // self.patch_size[1])
        table = resample_position_embeddings_in_graph(self.embeddings, self.grid_size, grid, self.num_prefix_tokens)
        return tokens + ops.cast(table, tokens.dtype)

    def compute_output_shape(self, tokens_shape, images_shape=None):
        return tokens_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            grid_size=self.grid_size,
            num_prefix_tokens=self.num_prefix_tokens,
            initializer=self.initializer,
            patch_size=self.patch_size,
        )
        return config


def sinusoidal_table(positions: np.ndarray, dim: int, max_wavelength: float = 10000.0) -> np.ndarray:
    """`(len(positions), dim)` table of the original Transformer: sin on even, cos on odd channels.

    PE(p, 2i) = sin(p / w^(2i/d)), PE(p, 2i+1) = cos(p / w^(2i/d)),
    Vaswani et al. 2017 (https://arxiv.org/abs/1706.03762), section 3.5.
    """
    if dim % 2:
        raise ValueError(f"Sinusoidal encodings need an even dimension. Received: dim={dim}")
    inv_freq = 1.0 / max_wavelength ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    table = np.empty((len(angles), dim), dtype=np.float64)
    table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles)
    return table


@serializable
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Adds fixed 1D sinusoidal position encodings (Vaswani et al. 2017) to a sequence.

    Works for any length, so a model can run on sequences longer than it saw in
    training. Computed with `keras.ops` so it also runs inside compiled graphs.

    Args:
        max_wavelength: float. Longest wavelength. Defaults to `10000`.

    Call arguments:
        tokens: `(batch, length, dim)` with even `dim`.
        start_index: int or scalar tensor. Position of the first token (for
            incremental decoding). Defaults to `0`.

    Returns:
        `tokens` plus the encoding.
    """

    def __init__(self, max_wavelength: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        if max_wavelength <= 0:
            raise ValueError(f"`max_wavelength` must be positive. Received: max_wavelength={max_wavelength}")
        self.max_wavelength = float(max_wavelength)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] % 2:
            raise ValueError(f"Sinusoidal encodings need an even dimension. Received: dim={input_shape[-1]}")

    def call(self, tokens, start_index=0):
        length, dim = ops.shape(tokens)[1], tokens.shape[-1]
        positions = ops.cast(ops.arange(length) + start_index, "float32")
        inv_freq = ops.convert_to_tensor(
            1.0 / self.max_wavelength ** (np.arange(0, dim, 2, dtype=np.float64) / dim), "float32"
        )
        angles = positions[:, None] * inv_freq[None, :]
        table = ops.reshape(ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1), (length, dim))
        return tokens + ops.cast(table, tokens.dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(max_wavelength=self.max_wavelength)
        return config


def sincos_2d_table(grid_size: tuple[int, int], dim: int, temperature: float = 10000.0) -> np.ndarray:
    """`(rows*columns, dim)` fixed 2D sin-cos table (MAE, https://arxiv.org/abs/2111.06377).

    The first half of the channels encodes the column, the second half the row;
    each half is `[sin, cos]` of the coordinate at geometric frequencies.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos embeddings need a dimension divisible by 4. Received: dim={dim}")
    rows, cols = np.meshgrid(np.arange(grid_size[0]), np.arange(grid_size[1]), indexing="ij")
    omega = 1.0 / temperature ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))

    def encode(coordinate):
        angles = coordinate.reshape(-1, 1).astype(np.float64) * omega[None]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1)


@serializable
class SinCosPositionEmbedding2D(keras.layers.Layer):
    """Adds a fixed 2D sin-cos position embedding to patch tokens (no weights to learn or resample).

    Args:
        grid_size: int or (int, int). Patch grid (rows, columns).
        num_prefix_tokens: int. Leading tokens that receive zeros. Defaults to `0`.
        temperature: float. Longest wavelength. Defaults to `10000`.

    Call arguments:
        tokens: `(batch, num_prefix_tokens + rows * columns, dim)`, `dim` divisible by 4.

    Returns:
        `tokens` plus the embedding.
    """

    def __init__(self, grid_size, num_prefix_tokens: int = 0, temperature: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = to_pair(grid_size, "grid_size")
        self.num_prefix_tokens = num_prefix_tokens
        self.temperature = float(temperature)

    def build(self, input_shape):
        table = sincos_2d_table(self.grid_size, input_shape[-1], self.temperature)
        prefix = np.zeros((self.num_prefix_tokens, input_shape[-1]))
        self._table = np.concatenate([prefix, table])[None].astype("float32")

    def call(self, tokens):
        return tokens + ops.cast(ops.convert_to_tensor(self._table), tokens.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(grid_size=self.grid_size, num_prefix_tokens=self.num_prefix_tokens, temperature=self.temperature)
        return config
