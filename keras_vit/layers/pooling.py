"""Reduces a token sequence to one vector per image: a chosen token, an average, or attention pooling."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers._fast import attention
from keras_vit.layers._serializable import serializable
from keras_vit.layers.attention import expand_attention_mask
from keras_vit.layers.mlp import ACTIVATIONS, Mlp
from keras_vit.layers.normalization import NORM_KINDS, make_norm
from keras_vit.validation import check_choice, check_positive_int

POOLING_MODES = ("token", "gap")


@serializable
class TokenPooling(keras.layers.Layer):
    """Picks one prefix token or averages the patch tokens.

    Args:
        mode: "token" takes the token at `token_index` (the class token is 0, a
            DeiT distillation token 1); "gap" averages the tokens after the
            `num_prefix_tokens` prefix tokens (so register tokens are left out).
        num_prefix_tokens: int. Prefix tokens to skip for "gap". Defaults to `0`.
        token_index: int. Token taken by "token". Defaults to `0`.

    Call arguments:
        tokens: `(batch, length, dim)`.

    Returns:
        `(batch, dim)`.
    """

    def __init__(self, mode: str = "token", num_prefix_tokens: int = 0, token_index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice(mode, "mode", POOLING_MODES)
        self.num_prefix_tokens = num_prefix_tokens
        self.token_index = token_index

    def call(self, tokens):
        if self.mode == "token":
            return tokens[:, self.token_index]
        return ops.mean(tokens[:, self.num_prefix_tokens :], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, num_prefix_tokens=self.num_prefix_tokens, token_index=self.token_index)
        return config


LATENT_POOLS = ("token", "avg")


@serializable
class AttentionPoolLatent(keras.layers.Layer):
    """Multi-head attention pooling: learned latent queries attend over the tokens (the "MAP" head).

    SigLIP's and Perception Encoder's pooling head (Zhai et al. 2023,
    https://arxiv.org/abs/2303.15343; Lee et al. 2019's PMA), as timm's
    `AttentionPoolLatent`: the latent query `q(latent)` attends over `kv(tokens)`,
    then `proj`, and a residual MLP `x + mlp(norm(x))`. Sublayer names follow
    timm's (`latent`, `q`, `kv`, `proj`, `norm`, `mlp`) so checkpoints map by name.

    Args:
        num_heads: int. Attention heads; must divide the token dimension.
        mlp_ratio: float. MLP width as a multiple of the token dimension. Defaults to `4.0`.
        qkv_bias: bool. Biases in `q` and `kv`. Defaults to `True`.
        num_latents: int. Learned queries (timm's `latent_len`). Defaults to `1`.
        norm: "layer" or "rms". The norm before the MLP. Defaults to "layer".
        norm_epsilon: float. Defaults to `1e-6`.
        activation: the MLP's activation, one of `Mlp`'s. Defaults to "gelu".
        pool: "token" (the first latent's output, timm's default) or "avg" (the latents' mean).
            Defaults to "token".

    Call arguments:
        tokens: `(batch, length, dim)`.
        attention_mask: optional boolean `(batch, length)`, True for tokens the latents may attend to.
        return_attention_scores: bool. Also return the weights `(batch, heads, num_latents, length)` (float32).

    Returns:
        `(batch, dim)`, and the weights if asked for.
    """

    def __init__(
        self,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_latents: int = 1,
        norm: str = "layer",
        norm_epsilon: float = 1e-6,
        activation: str = "gelu",
        pool: str = "token",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        if not isinstance(mlp_ratio, (int, float)) or isinstance(mlp_ratio, bool) or mlp_ratio <= 0:
            raise ValueError(f"`mlp_ratio` must be a positive number. Received: mlp_ratio={mlp_ratio!r}")
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.num_latents = check_positive_int(num_latents, "num_latents")
        self.norm_kind = check_choice(norm, "norm", NORM_KINDS)
        self.norm_epsilon = norm_epsilon
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.pool = check_choice(pool, "pool", LATENT_POOLS)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(
                f"The token dimension {dim} is not divisible by num_heads={self.num_heads}. "
                "Choose a number of heads that divides the hidden dim."
            )
        self.head_dim = dim // self.num_heads
        self.latent = self.add_weight(
            shape=(1, self.num_latents, dim),
            initializer=keras.initializers.TruncatedNormal(stddev=dim**-0.5),
            name="latent",
        )
        latent_shape = (None, self.num_latents, dim)

        def dense(units, name, shape, use_bias=True):
            layer = keras.layers.Dense(units, use_bias=use_bias, name=name, dtype=self.dtype_policy)
            layer.build(shape)
            return layer

        self.q = dense(dim, "q", latent_shape, self.qkv_bias)
        self.kv = dense(2 * dim, "kv", input_shape, self.qkv_bias)
        self.proj = dense(dim, "proj", latent_shape)
        self.norm = make_norm(self.norm_kind, self.norm_epsilon, "norm", self.dtype_policy)
        self.norm.build(latent_shape)
        self.mlp = Mlp(int(dim * self.mlp_ratio), activation=self.activation, name="mlp", dtype=self.dtype_policy)
        self.mlp.build(latent_shape)

    def _heads(self, x, length):
        """`(batch, length, dim)` as `(batch, heads, length, head_dim)`."""
        x = ops.reshape(x, (-1, length, self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, tokens, attention_mask=None, return_attention_scores=False):
        batch, length, dim = ops.shape(tokens)[0], ops.shape(tokens)[1], tokens.shape[-1]
        latent = ops.broadcast_to(ops.cast(self.latent, self.compute_dtype), (batch, self.num_latents, dim))
        query = self._heads(self.q(latent), self.num_latents)
        key, value = ops.split(self.kv(tokens), 2, axis=-1)
        key, value = self._heads(key, length), self._heads(value, length)
        mask = None if attention_mask is None else expand_attention_mask(attention_mask, tokens.shape[1])
        results = attention(
            query, key, value, scale=self.head_dim**-0.5, mask=mask, return_weights=return_attention_scores
        )
        mixed = results[0] if return_attention_scores else results
        x = self.proj(ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (batch, self.num_latents, dim)))
        x = x + self.mlp(self.norm(x))
        pooled = x[:, 0] if self.pool == "token" else ops.mean(x, axis=1)
        return (pooled, results[1]) if return_attention_scores else pooled

    def compute_output_spec(self, tokens, attention_mask=None, return_attention_scores=False):
        pooled = keras.KerasTensor((tokens.shape[0], tokens.shape[-1]), dtype=self.compute_dtype)
        if not return_attention_scores:
            return pooled
        weights_shape = (tokens.shape[0], self.num_heads, self.num_latents, tokens.shape[1])
        return pooled, keras.KerasTensor(weights_shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias,
            num_latents=self.num_latents,
            norm=self.norm_kind,
            norm_epsilon=self.norm_epsilon,
            activation=self.activation,
            pool=self.pool,
        )
        return config
