"""The pieces of masked-autoencoder pretraining (MAE, He et al. 2021, https://arxiv.org/abs/2111.06377).

Patch layout: a patch is flattened row by row, channels last, so the vector of
patch `(i, j)` is `image[i*p:(i+1)*p, j*p:(j+1)*p, :].reshape(-1)` and patches
come in row-major grid order. This is also the order of Hugging Face's
`ViTMAEForPreTraining.patchify`, so predictions compare element by element.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers._serializable import serializable
from keras_vit.validation import to_pair


def check_mask_ratio(mask_ratio: float) -> float:
    """`mask_ratio` as a float in (0, 1), or a `ValueError` naming it."""
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0.0 < mask_ratio < 1.0:
        raise ValueError(
            "`mask_ratio` is the fraction of patches hidden from the encoder and must be in (0, 1) "
            f"(the paper uses 0.75). Received: mask_ratio={mask_ratio!r}"
        )
    return float(mask_ratio)


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches the encoder sees: `int(num_patches * (1 - mask_ratio))`, as the reference code rounds."""
    return int(num_patches * (1 - mask_ratio))


def patchify(images, patch_size):
    """`(batch, h, w, c)` images -> `(batch, patches, ph * pw * c)` in the module's patch layout."""
    ph, pw = to_pair(patch_size, "patch_size")
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    grid_h, grid_w = height // ph, width // pw
    x = ops.reshape(images, (-1, grid_h, ph, grid_w, pw, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, grid_h * grid_w, ph * pw * channels))


def unpatchify(patches, patch_size, image_size, num_channels: int):
    """Inverse of `patchify`: `(batch, patches, ph * pw * c)` -> `(batch, h, w, c)`."""
    ph, pw = to_pair(patch_size, "patch_size")
    height, width = to_pair(image_size, "image_size")
    grid_h, grid_w = height // ph, width // pw
    x = ops.reshape(patches, (-1, grid_h, grid_w, ph, pw, num_channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height, width, num_channels))


def _gather_tokens(tokens, indices):
    """`tokens[b, indices[b, k], :]` for every batch row `b`."""
    indices = ops.repeat(ops.expand_dims(indices, -1), tokens.shape[-1], axis=-1)
    return ops.take_along_axis(tokens, indices, axis=1)


@serializable
class RandomPatchMasking(keras.layers.Layer):
    """Keeps a random subset of each sample's patch tokens, driven by `noise`.

    Per sample, patches are sorted by their noise value and the
    `int(patches * (1 - mask_ratio))` lowest are kept (MAE's per-sample
    shuffling); prefix tokens (the class token) always stay in front.

    Args:
        mask_ratio: float in (0, 1). Fraction of patches removed. Defaults to 0.75.
        num_prefix_tokens: int. Leading tokens that are never masked. Defaults to 1.

    Call arguments:
        tokens: `(batch, num_prefix_tokens + patches, dim)`.
        noise: `(batch, patches)` floats; lower values are kept.

    Returns:
        `(visible, mask, ids_restore)`: visible tokens `(batch, prefix + kept, dim)`,
        float mask `(batch, patches)` with 1 for removed patches, and the int32
        permutation `(batch, patches)` that puts shuffled tokens back in place.
    """

    def __init__(self, mask_ratio: float = 0.75, num_prefix_tokens: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.mask_ratio = check_mask_ratio(mask_ratio)
        if not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(
                f"`num_prefix_tokens` must be an int >= 0. Received: num_prefix_tokens={num_prefix_tokens!r}"
            )
        self.num_prefix_tokens = num_prefix_tokens

    def build(self, tokens_shape, noise_shape=None):
        patches = tokens_shape[1] - self.num_prefix_tokens
        if num_visible(patches, self.mask_ratio) < 1:
            raise ValueError(
                f"With {patches} patches, mask_ratio={self.mask_ratio} leaves the encoder no patch to see. "
                f"Use a smaller mask_ratio or more patches. Received: mask_ratio={self.mask_ratio}"
            )

    def call(self, tokens, noise):
        prefix, patches = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens :]
        keep = num_visible(patches.shape[1], self.mask_ratio)
        ids_shuffle = ops.cast(ops.argsort(noise, axis=1), "int32")
        ids_restore = ops.cast(ops.argsort(ids_shuffle, axis=1), "int32")
        visible = _gather_tokens(patches, ids_shuffle[:, :keep])
        mask = ops.cast(ops.greater_equal(ids_restore, keep), self.compute_dtype)
        return ops.concatenate([prefix, visible], axis=1), mask, ids_restore

    def compute_output_spec(self, tokens, noise):
        patches = tokens.shape[1] - self.num_prefix_tokens
        keep = num_visible(patches, self.mask_ratio)
        batch = tokens.shape[0]
        return (
            keras.KerasTensor((batch, self.num_prefix_tokens + keep, tokens.shape[2]), dtype=tokens.dtype),
            keras.KerasTensor((batch, patches), dtype=self.compute_dtype),
            keras.KerasTensor((batch, patches), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(mask_ratio=self.mask_ratio, num_prefix_tokens=self.num_prefix_tokens)
        return config


@serializable
class MaskTokenFill(keras.layers.Layer):
    """Puts a learned mask token at every removed patch and restores the grid order (MAE decoder input).

    Args:
        num_prefix_tokens: int. Leading tokens passed through. Defaults to 1.
        initializer: initializer of the mask token. Defaults to normal, stddev 0.02 (MAE).

    Call arguments:
        tokens: `(batch, prefix + kept, dim)` visible tokens from the encoder.
        ids_restore: `(batch, patches)` from `RandomPatchMasking`.

    Returns:
        `(batch, prefix + patches, dim)` tokens in grid order.
    """

    def __init__(self, num_prefix_tokens: int = 1, initializer="normal_002", **kwargs):
        super().__init__(**kwargs)
        self.num_prefix_tokens = num_prefix_tokens
        self.initializer = initializer

    def build(self, tokens_shape, ids_restore_shape=None):
        initializer = (
            keras.initializers.RandomNormal(stddev=0.02)
            if self.initializer == "normal_002"
            else keras.initializers.get(self.initializer)
        )
        self.mask_token = self.add_weight(shape=(1, 1, tokens_shape[-1]), initializer=initializer, name="mask_token")

    def call(self, tokens, ids_restore):
        prefix, visible = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens :]
        batch, dim = ops.shape(tokens)[0], tokens.shape[-1]
        missing = ids_restore.shape[1] - visible.shape[1]
        fill = ops.broadcast_to(ops.cast(self.mask_token, tokens.dtype), (batch, missing, dim))
        shuffled = ops.concatenate([visible, fill], axis=1)
        return ops.concatenate([prefix, _gather_tokens(shuffled, ids_restore)], axis=1)

    def compute_output_spec(self, tokens, ids_restore):
        shape = (tokens.shape[0], self.num_prefix_tokens + ids_restore.shape[1], tokens.shape[2])
        return keras.KerasTensor(shape, dtype=tokens.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(num_prefix_tokens=self.num_prefix_tokens, initializer=self.initializer)
        return config


@serializable
class DropPrefixTokens(keras.layers.Layer):
    """Removes the leading prefix tokens (the decoder's class token) from a sequence.

    Args:
        num_prefix_tokens: int. Tokens to drop. Defaults to 1.
    """

    def __init__(self, num_prefix_tokens: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, tokens):
        return tokens[:, self.num_prefix_tokens :]

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] - self.num_prefix_tokens
        return (input_shape[0], length, *input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update(num_prefix_tokens=self.num_prefix_tokens)
        return config


@serializable
class MaskedPatchLoss(keras.layers.Layer):
    """MAE's reconstruction loss: mean squared error over the removed patches only.

    With `norm_pix_loss`, each target patch is first normalised by its own mean
    and (unbiased) variance, `(x - mean) / sqrt(var + epsilon)`, as the paper's
    code does. Computed in float32.

    Args:
        patch_size: int or (int, int). Patch height and width in pixels.
        norm_pix_loss: bool. Per-patch normalised pixel targets. Defaults to False.
        epsilon: float. Added to the variance. Defaults to 1e-6 (the paper's code).

    Call arguments:
        images: `(batch, h, w, c)` the model's input.
        pred: `(batch, patches, ph * pw * c)` predicted patches.
        mask: `(batch, patches)`, 1 for removed patches.

    Returns:
        The scalar loss of the batch.
    """

    def __init__(self, patch_size, norm_pix_loss: bool = False, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = to_pair(patch_size, "patch_size")
        self.norm_pix_loss = bool(norm_pix_loss)
        self.epsilon = float(epsilon)

    def target(self, images):
        """The patches the decoder learns to predict (normalised when `norm_pix_loss`)."""
        target = ops.cast(patchify(images, self.patch_size), "float32")
        if self.norm_pix_loss:
            size = target.shape[-1]
            mean = ops.mean(target, axis=-1, keepdims=True)
            var = ops.sum(ops.square(target - mean), axis=-1, keepdims=True) / (size - 1)
            target = (target - mean) / ops.sqrt(var + self.epsilon)
        return target

    def call(self, images, pred, mask):
        per_patch = ops.mean(ops.square(ops.cast(pred, "float32") - self.target(images)), axis=-1)
        mask = ops.cast(mask, "float32")
        return ops.sum(per_patch * mask) / ops.sum(mask)

    def compute_output_spec(self, images, pred, mask):
        return keras.KerasTensor((), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, norm_pix_loss=self.norm_pix_loss, epsilon=self.epsilon)
        return config
