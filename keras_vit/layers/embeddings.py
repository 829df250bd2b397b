"""Patch embedding and prefix tokens: how an image becomes a token sequence."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_vit.layers._fast import patch_projection
from keras_vit.layers._serializable import serializable
from keras_vit.layers.position import bicubic_resize_matrix
from keras_vit.validation import check_positive_int, to_pair


def resample_patch_kernel(kernel: np.ndarray, new_patch_size) -> np.ndarray:
    """A patch-embedding kernel `(height, width, channels, dim)` resampled to another patch size (FlexiViT).

    Beyer et al. 2022 (https://arxiv.org/abs/2212.08013): with `R` the matrix
    that resizes a patch bicubically (antialiased, as timm) from the old to the
    new size, the new kernel is `pinv(R)^T` applied to the old one, so that
    `<resize(patch), new kernel> = <patch, old kernel>`: a model keeps its
    outputs when patches and images are resized together. Equals timm's
    `resample_patch_embed` (Keras layout here, PyTorch's there).
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(
            f"Expected a Conv2D kernel (height, width, channels, dim). Received: kernel.shape={kernel.shape}"
        )
    (h, w), (new_h, new_w) = kernel.shape[:2], to_pair(new_patch_size, "new_patch_size")
    if (h, w) == (new_h, new_w):
        return kernel
    resize = np.kron(bicubic_resize_matrix(h, new_h), bicubic_resize_matrix(w, new_w))  # (new_h*new_w, h*w)
    flat = kernel.reshape(h * w, -1).astype(np.float64)
    resampled = np.linalg.pinv(resize).T @ flat
    return resampled.reshape(new_h, new_w, *kernel.shape[2:]).astype(kernel.dtype)


@serializable
class PatchEmbedding(keras.layers.Layer):
    """Splits images into non-overlapping patches and projects each to `hidden_dim`.

    A convolution whose kernel and stride both equal the patch size is exactly a
    linear map of each flattened patch (ViT, https://arxiv.org/abs/2010.11929).

    Args:
        patch_size: int or (int, int). Patch height and width in pixels.
        hidden_dim: int. Size of each token.
        use_bias: bool. Whether the projection has a bias (CLIP's has none). Defaults to `True`.
        drop_remainder: bool. Accept image sizes that are not a multiple of the
            patch size, ignoring the last rows/columns as timm's convolution
            does (e.g. patch 14 at 384). Defaults to `False` (such sizes raise).
        norm: None, "layer" or "rms". A norm on the tokens after the projection
            (AIMv2; timm's `embed_norm_layer`), sublayer `norm`. Defaults to None.
        norm_epsilon: float. Epsilon of that norm. Defaults to `1e-6`.

    Call arguments:
        images: `(batch, height, width, channels)`; height and width divisible
            by the patch size unless `drop_remainder`.

    Returns:
        `(batch, num_patches, hidden_dim)` tokens in row-major patch order.
    """

    def __init__(
        self,
        patch_size,
        hidden_dim: int,
        use_bias: bool = True,
        drop_remainder: bool = False,
        norm: str | None = None,
        norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.patch_size = to_pair(patch_size, "patch_size")
        self.hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        self.use_bias = use_bias
        self.drop_remainder = bool(drop_remainder)
        if norm not in (None, "layer", "rms"):
            raise ValueError(f"`norm` must be None, 'layer' or 'rms'. Received: norm={norm!r}")
        self.norm = norm
        self.norm_epsilon = norm_epsilon

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "PatchEmbedding expects images of rank 4 (batch, height, width, channels). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        for size, patch, axis in zip(input_shape[1:3], self.patch_size, ("height", "width")):
            if size is not None and size % patch and not self.drop_remainder:
                raise ValueError(
                    f"Image {axis} {size} is not divisible by patch size {patch}. "
                    "Resize or crop the images, choose a patch size that divides them, or set drop_remainder=True."
                )
        self.projection = keras.layers.Conv2D(
            self.hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            use_bias=self.use_bias,
            data_format="channels_last",
            name="projection",
            dtype=self.dtype_policy,
        )
        self.projection.build(input_shape)
        if self.norm is not None:
            from keras_vit.layers.normalization import make_norm

            self.norm_layer = make_norm(self.norm, self.norm_epsilon, "norm", self.dtype_policy)
            self.norm_layer.build((input_shape[0], None, self.hidden_dim))

    def call(self, images):
        if self.drop_remainder:
            rows = ops.shape(images)[1] // self.patch_size[0] * self.patch_size[0]
            cols = ops.shape(images)[2] // self.patch_size[1] * self.patch_size[1]
            images = images[:, :rows, :cols]
        tokens = patch_projection(self.projection, images)
        return tokens if self.norm is None else self.norm_layer(tokens)

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        n = None if h is None or w is None else (h // self.patch_size[0]) * (w // self.patch_size[1])
        return (input_shape[0], n, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            patch_size=self.patch_size,
            hidden_dim=self.hidden_dim,
            use_bias=self.use_bias,
            drop_remainder=self.drop_remainder,
            norm=self.norm,
            norm_epsilon=self.norm_epsilon,
        )
        return config


@serializable
class PrefixTokens(keras.layers.Layer):
    """Prepends learned tokens to a sequence: class, distillation and register tokens.

    Order is `[class, distillation, registers..., sequence]` as in timm, so
    checkpoint tensors map one to one. Class and distillation tokens start at
    zero (ViT); register tokens at a small normal (Darcet et al. 2023,
    https://arxiv.org/abs/2309.16588).

    Args:
        class_token: bool. Add a class token. Defaults to `True`.
        distillation_token: bool. Add a DeiT distillation token
            (https://arxiv.org/abs/2012.12877). Defaults to `False`.
        num_register_tokens: int. Number of register tokens. Defaults to `0`.

    Call arguments:
        tokens: `(batch, length, dim)`.

    Returns:
        `(batch, num_tokens + length, dim)`.
    """

    def __init__(
        self,
        class_token: bool = True,
        distillation_token: bool = False,
        num_register_tokens: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_register_tokens, int) or num_register_tokens < 0:
            raise ValueError(
                "`num_register_tokens` must be a non-negative int. "
                f"Received: num_register_tokens={num_register_tokens!r}"
            )
        self.class_token = bool(class_token)
        self.distillation_token = bool(distillation_token)
        self.num_register_tokens = num_register_tokens

    @property
    def num_tokens(self) -> int:
        return int(self.class_token) + int(self.distillation_token) + self.num_register_tokens

    def build(self, input_shape):
        dim = input_shape[-1]
        self.tokens = []
        if self.class_token:
            self.cls_token = self.add_weight(shape=(1, 1, dim), initializer="zeros", name="cls_token")
            self.tokens.append(self.cls_token)
        if self.distillation_token:
            self.dist_token = self.add_weight(shape=(1, 1, dim), initializer="zeros", name="dist_token")
            self.tokens.append(self.dist_token)
        if self.num_register_tokens:
            self.reg_token = self.add_weight(
                shape=(1, self.num_register_tokens, dim),
                initializer=keras.initializers.RandomNormal(stddev=1e-6),
                name="reg_token",
            )
            self.tokens.append(self.reg_token)

    def call(self, tokens):
        if not self.tokens:
            return tokens
        batch, dim = ops.shape(tokens)[0], ops.shape(tokens)[-1]
        prefix = [ops.broadcast_to(ops.cast(t, tokens.dtype), (batch, t.shape[1], dim)) for t in self.tokens]
        return ops.concatenate(prefix + [tokens], axis=1)

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        return (input_shape[0], None if n is None else n + self.num_tokens, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(
            class_token=self.class_token,
            distillation_token=self.distillation_token,
            num_register_tokens=self.num_register_tokens,
        )
        return config


@serializable
class DropPrefixTokens(keras.layers.Layer):
    """Removes the leading prefix tokens (class, distillation, registers), leaving the patch tokens.

    What timm's attention pooling and its patch-token feature maps see.

    Args:
        num_prefix_tokens: int. Leading tokens to drop.

    Call arguments:
        tokens: `(batch, num_prefix_tokens + patches, dim)`.

    Returns:
        `(batch, patches, dim)`.
    """

    def __init__(self, num_prefix_tokens: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(
                f"`num_prefix_tokens` must be a non-negative int. Received: num_prefix_tokens={num_prefix_tokens!r}"
            )
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, tokens):
        return tokens[:, self.num_prefix_tokens :]

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        return (input_shape[0], None if n is None else n - self.num_prefix_tokens, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(num_prefix_tokens=self.num_prefix_tokens)
        return config
