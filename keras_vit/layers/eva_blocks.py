"""EVA attention and blocks (timm's `EvaAttention`/`AttentionRope`, `EvaBlock`, `EvaBlockPostNorm`).

What sets them apart from the ViT block: rotary position embeddings applied to
the patch tokens' queries and keys (prefix tokens untouched), optional
separate q/k/v projections without a key bias (EVA), grouped key/value heads,
a norm inside attention and inside the MLP (EVA-02's "sub-LN"), SwiGLU MLPs,
RMSNorm, and a post-norm variant (EVA-02 enormous). Sublayer names follow timm.
"""

from __future__ import annotations

import math
from functools import partial

import keras
from keras import ops

from keras_vit.layers._fast import attention, dense, flatten_tokens, unflatten_tokens
from keras_vit.layers._serializable import serializable
from keras_vit.layers.mlp import GatedMlp, Mlp
from keras_vit.layers.normalization import NORM_KINDS, make_norm
from keras_vit.layers.regularization import DropPath, LayerScale
from keras_vit.layers.rope import apply_rotary
from keras_vit.validation import check_choice, check_positive_int, check_rate

NORMS = NORM_KINDS
MLP_KINDS = ("mlp", "swiglu", "swiglu_packed")
# EvaBlock arguments handed to its EvaAttention unchanged.
_BLOCK_ATTENTION_ARGS = (
    "num_kv_heads",
    "qkv_bias",
    "key_bias",
    "qkv_fused",
    "qk_norm",
    "inner_norm",
    "num_prefix_tokens",
    "rotate_half",
    "attention_dropout_rate",
    "dropout_rate",
)


def _dense(units, use_bias, name, dtype, input_shape):
    layer = keras.layers.Dense(units, use_bias=use_bias, name=name, dtype=dtype)
    layer.build(input_shape)
    return layer


@serializable
class EvaAttention(keras.layers.Layer):
    """Self-attention with 2D rotary embeddings on the patch tokens (EVA-02, DINOv3, ROPE-ViT, PE).

    Args:
        num_heads: int. Query heads.
        num_kv_heads: int or None. Key/value heads (grouped-query attention);
            must divide `num_heads`. Defaults to None (= num_heads).
        qkv_bias: bool. Biases on queries and values (and keys, see `key_bias`). Defaults to True.
        key_bias: bool. Whether keys get a bias too: False for timm's `EvaAttention`
            (fused `qkv` without bias plus `q_bias`/`v_bias`), True for `AttentionRope`. Defaults to False.
        qkv_fused: bool. One `qkv` projection, else `q_proj`, `k_proj`, `v_proj`. Defaults to True.
        qk_norm: bool. Normalize queries and keys per head. Defaults to False.
        inner_norm: bool. Normalize the mixed values before `proj` (timm's scale_attn_inner). Defaults to False.
        norm: "layer" or "rms". Kind of the qk and inner norms. Defaults to "layer".
        norm_epsilon: float. Defaults to 1e-6.
        num_prefix_tokens: int. Leading tokens (class, registers) left unrotated. Defaults to 1.
        rotate_half: bool. Rotary layout (see `keras_vit.layers.rope`). Defaults to False.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to 0.
        dropout_rate: float. Dropout after `proj`. Defaults to 0.

    Call arguments:
        tokens: `(batch, tokens, dim)`.
        rope: None or `[sin, cos]` embedding `(patches, 2 * head_dim)` or `(heads, patches, 2 * head_dim)`.
        return_attention_scores: bool. Also return the `(batch, heads, tokens, tokens)` weights.
        training: bool.

    Returns:
        `(batch, tokens, dim)`, and the float32 weights if asked for.
    """

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int | None = None,
        qkv_bias: bool = True,
        key_bias: bool = False,
        qkv_fused: bool = True,
        qk_norm: bool = False,
        inner_norm: bool = False,
        norm: str = "layer",
        norm_epsilon: float = 1e-6,
        num_prefix_tokens: int = 1,
        rotate_half: bool = False,
        attention_dropout_rate: float = 0.0,
        dropout_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        if num_kv_heads is not None:
            check_positive_int(num_kv_heads, "num_kv_heads")
            if num_heads % num_kv_heads:
                raise ValueError(
                    f"`num_kv_heads` must divide `num_heads` ({num_heads}). Received: num_kv_heads={num_kv_heads}"
                )
            if qkv_fused and num_kv_heads != num_heads:
                raise ValueError(
                    "Grouped key/value heads need separate projections: set qkv_fused=False. "
                    f"Received: num_kv_heads={num_kv_heads}, qkv_fused=True"
                )
        self.num_kv_heads = num_kv_heads
        self.qkv_bias = bool(qkv_bias)
        self.key_bias = bool(key_bias)
        self.qkv_fused = bool(qkv_fused)
        self.qk_norm = bool(qk_norm)
        self.inner_norm = bool(inner_norm)
        self.norm_kind = check_choice(norm, "norm", NORMS)
        self.norm_epsilon = float(norm_epsilon)
        self.num_prefix_tokens = num_prefix_tokens
        self.rotate_half = bool(rotate_half)
        self.attention_dropout_rate = check_rate(attention_dropout_rate, "attention_dropout_rate")
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")

    def build(self, tokens_shape, rope_shape=None):
        dim = tokens_shape[-1]
        if dim % self.num_heads:
            raise ValueError(f"The token width {dim} is not divisible by num_heads={self.num_heads}.")
        self.head_dim = dim // self.num_heads
        kv_heads = self.num_kv_heads or self.num_heads
        dtype, flat = self.dtype_policy, (None, dim)
        if self.qkv_fused:
            self.qkv = _dense(3 * dim, self.qkv_bias and self.key_bias, "qkv", dtype, flat)
            if self.qkv_bias and not self.key_bias:
                self.q_bias = self.add_weight(shape=(dim,), initializer="zeros", name="q_bias")
                self.v_bias = self.add_weight(shape=(dim,), initializer="zeros", name="v_bias")
        else:
            self.q_proj = _dense(dim, self.qkv_bias, "q_proj", dtype, flat)
            self.k_proj = _dense(kv_heads * self.head_dim, self.qkv_bias and self.key_bias, "k_proj", dtype, flat)
            self.v_proj = _dense(kv_heads * self.head_dim, self.qkv_bias, "v_proj", dtype, flat)
        if self.qk_norm:
            self.q_norm = make_norm(self.norm_kind, self.norm_epsilon, "q_norm", dtype)
            self.k_norm = make_norm(self.norm_kind, self.norm_epsilon, "k_norm", dtype)
            self.q_norm.build((None, self.head_dim))
            self.k_norm.build((None, self.head_dim))
        if self.inner_norm:
            self.norm = make_norm(self.norm_kind, self.norm_epsilon, "norm", dtype)
            self.norm.build(flat)
        self.proj = _dense(dim, True, "proj", dtype, flat)
        self.attention_dropout = keras.layers.Dropout(self.attention_dropout_rate, dtype=dtype)
        self.proj_dropout = keras.layers.Dropout(self.dropout_rate, dtype=dtype)

    def _heads(self, x, batch, length, heads):
        return ops.transpose(ops.reshape(x, (batch, length, heads, self.head_dim)), (0, 2, 1, 3))

    def _project(self, flat, training):
        if not self.qkv_fused:
            return (
                dense(self.q_proj, flat, training),
                dense(self.k_proj, flat, training),
                dense(self.v_proj, flat, training),
            )
        qkv = dense(self.qkv, flat, training)
        if self.qkv_bias and not self.key_bias:
            zeros = ops.zeros(self.q_bias.shape, self.q_bias.dtype)
            qkv = qkv + ops.cast(ops.concatenate([self.q_bias, zeros, self.v_bias]), qkv.dtype)
        return ops.split(qkv, 3, axis=-1)

    def _rotate(self, x, rope):
        n = self.num_prefix_tokens
        rotated = apply_rotary(x[:, :, n:], rope, self.rotate_half)
        return ops.concatenate([x[:, :, :n], rotated], axis=2) if n else rotated

    def call(self, tokens, rope=None, return_attention_scores=False, training=None):
        shape = ops.shape(tokens)
        batch, length = shape[0], shape[1]
        q, k, v = self._project(flatten_tokens(tokens), training)
        kv_heads = self.num_kv_heads or self.num_heads
        q = self._heads(q, batch, length, self.num_heads)
        k, v = self._heads(k, batch, length, kv_heads), self._heads(v, batch, length, kv_heads)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = self._rotate(q, rope), self._rotate(k, rope)
        if kv_heads != self.num_heads:
            k = ops.repeat(k, self.num_heads // kv_heads, axis=1)
            v = ops.repeat(v, self.num_heads // kv_heads, axis=1)
        dropout = None
        if training and self.attention_dropout_rate > 0:
            dropout = partial(self.attention_dropout, training=True)
        mixed = attention(
            q, k, v, scale=1.0 / math.sqrt(self.head_dim), dropout=dropout, return_weights=return_attention_scores
        )
        mixed, weights = mixed if return_attention_scores else (mixed, None)
        flat = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (-1, self.num_heads * self.head_dim))
        if self.inner_norm:
            flat = self.norm(flat)
        outputs = unflatten_tokens(self.proj_dropout(dense(self.proj, flat, training), training=training), tokens)
        return (outputs, weights) if return_attention_scores else outputs

    def compute_output_spec(self, tokens, rope=None, return_attention_scores=False, training=None):
        outputs = keras.KerasTensor(tokens.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        n = tokens.shape[1]
        return outputs, keras.KerasTensor((tokens.shape[0], self.num_heads, n, n), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            qkv_bias=self.qkv_bias,
            key_bias=self.key_bias,
            qkv_fused=self.qkv_fused,
            qk_norm=self.qk_norm,
            inner_norm=self.inner_norm,
            norm=self.norm_kind,
            norm_epsilon=self.norm_epsilon,
            num_prefix_tokens=self.num_prefix_tokens,
            rotate_half=self.rotate_half,
            attention_dropout_rate=self.attention_dropout_rate,
            dropout_rate=self.dropout_rate,
        )
        return config


def swiglu_hidden_units(dim: int, mlp_ratio: float, align_to: int = 0) -> int:
    """timm's SwiGLU width: `int(dim * mlp_ratio)` rounded up to a multiple of `align_to`."""
    hidden = int(dim * mlp_ratio)
    return hidden + (-hidden % align_to) if align_to else hidden


@serializable
class EvaBlock(keras.layers.Layer):
    """Pre-norm EVA block: `x + ls1(attn(norm1(x), rope))`, then `x + ls2(mlp(norm2(x)))`.

    Args:
        num_heads: int. Attention heads.
        mlp_hidden_units: int. MLP width (for SwiGLU, the gated product's).
        mlp_kind: "mlp" (GELU), "swiglu" (separate gate/value) or "swiglu_packed". Defaults to "mlp".
        mlp_inner_norm: bool. Norm inside the MLP (timm's scale_mlp). Defaults to False.
        layer_scale_init: float or None. LayerScale `gamma_1`/`gamma_2` start. Defaults to None.
        attn_only_layer_scale: bool. LayerScale on the attention branch only. Defaults to False.
        drop_path_rate: float. Stochastic depth. Defaults to 0.
        norm: "layer" or "rms". Every norm of the block. Defaults to "layer".
        norm_epsilon: float. Defaults to 1e-6.
        num_kv_heads: int or None. Passed to `EvaAttention`, as are qkv_bias, key_bias,
            qkv_fused, qk_norm, inner_norm, num_prefix_tokens, rotate_half,
            attention_dropout_rate and dropout_rate (which applies to the MLP too).

    Call arguments:
        tokens: `(batch, tokens, dim)`.
        rope: the rotary embedding for this block, or None.
        return_attention_scores: bool.
        training: bool.

    Returns:
        `(batch, tokens, dim)`, and the attention weights if asked for.
    """

    def __init__(
        self,
        num_heads: int,
        mlp_hidden_units: int,
        mlp_kind: str = "mlp",
        mlp_inner_norm: bool = False,
        layer_scale_init: float | None = None,
        attn_only_layer_scale: bool = False,
        drop_path_rate: float = 0.0,
        norm: str = "layer",
        norm_epsilon: float = 1e-6,
        num_kv_heads: int | None = None,
        qkv_bias: bool = True,
        key_bias: bool = False,
        qkv_fused: bool = True,
        qk_norm: bool = False,
        inner_norm: bool = False,
        num_prefix_tokens: int = 1,
        rotate_half: bool = False,
        attention_dropout_rate: float = 0.0,
        dropout_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_hidden_units = check_positive_int(mlp_hidden_units, "mlp_hidden_units")
        self.mlp_kind = check_choice(mlp_kind, "mlp_kind", MLP_KINDS)
        self.mlp_inner_norm = bool(mlp_inner_norm)
        self.layer_scale_init = layer_scale_init
        self.attn_only_layer_scale = bool(attn_only_layer_scale)
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.norm_kind = check_choice(norm, "norm", NORMS)
        self.norm_epsilon = float(norm_epsilon)
        dtype = self.dtype_policy
        # Created here (not in build) so argument errors surface at construction.
        self.attn = EvaAttention(
            num_heads,
            num_kv_heads=num_kv_heads,
            qkv_bias=qkv_bias,
            key_bias=key_bias,
            qkv_fused=qkv_fused,
            qk_norm=qk_norm,
            inner_norm=inner_norm,
            norm=norm,
            norm_epsilon=norm_epsilon,
            num_prefix_tokens=num_prefix_tokens,
            rotate_half=rotate_half,
            attention_dropout_rate=attention_dropout_rate,
            dropout_rate=dropout_rate,
            name="attn",
            dtype=dtype,
        )
        inner = norm if mlp_inner_norm else None
        if mlp_kind == "mlp":
            self.mlp = Mlp(
                self.mlp_hidden_units,
                dropout_rate=dropout_rate,
                inner_norm=inner,
                norm_epsilon=norm_epsilon,
                name="mlp",
                dtype=dtype,
            )
        else:
            self.mlp = GatedMlp(
                self.mlp_hidden_units,
                packed=mlp_kind == "swiglu_packed",
                inner_norm=inner,
                norm_epsilon=norm_epsilon,
                dropout_rate=dropout_rate,
                name="mlp",
                dtype=dtype,
            )
        self.ls1 = self.ls2 = None
        if layer_scale_init is not None:
            self.ls1 = LayerScale(layer_scale_init, name="ls1", dtype=dtype)
            if not attn_only_layer_scale:
                self.ls2 = LayerScale(layer_scale_init, name="ls2", dtype=dtype)

    def build(self, tokens_shape, rope_shape=None):
        self.norm1 = make_norm(self.norm_kind, self.norm_epsilon, "norm1", self.dtype_policy)
        self.norm2 = make_norm(self.norm_kind, self.norm_epsilon, "norm2", self.dtype_policy)
        for layer in (self.norm1, self.norm2, self.attn, self.mlp, self.ls1, self.ls2):
            if layer is not None:
                layer.build(tokens_shape)
        self.drop_path = DropPath(self.drop_path_rate, dtype=self.dtype_policy)

    def _branch(self, scale, x):
        return x if scale is None else scale(x)

    def call(self, tokens, rope=None, return_attention_scores=False, training=None):
        branch = self.attn(
            self.norm1(tokens), rope=rope, return_attention_scores=return_attention_scores, training=training
        )
        if return_attention_scores:
            branch, weights = branch
        tokens = tokens + self.drop_path(self._branch(self.ls1, branch), training=training)
        branch = self.mlp(self.norm2(tokens), training=training)
        tokens = tokens + self.drop_path(self._branch(self.ls2, branch), training=training)
        return (tokens, weights) if return_attention_scores else tokens

    def compute_output_spec(self, tokens, rope=None, return_attention_scores=False, training=None):
        return self.attn.compute_output_spec(tokens, return_attention_scores=return_attention_scores)

    def get_config(self):
        config = super().get_config()
        attention = self.attn.get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_hidden_units=self.mlp_hidden_units,
            mlp_kind=self.mlp_kind,
            mlp_inner_norm=self.mlp_inner_norm,
            layer_scale_init=self.layer_scale_init,
            attn_only_layer_scale=self.attn_only_layer_scale,
            drop_path_rate=self.drop_path_rate,
            norm=self.norm_kind,
            norm_epsilon=self.norm_epsilon,
            **{name: attention[name] for name in _BLOCK_ATTENTION_ARGS},
        )
        return config


@serializable
class EvaBlockPostNorm(EvaBlock):
    """Post-norm EVA block (EVA-02 enormous): `x + norm1(attn(x))`, then `x + norm2(mlp(x))`; no LayerScale."""

    def call(self, tokens, rope=None, return_attention_scores=False, training=None):
        branch = self.attn(tokens, rope=rope, return_attention_scores=return_attention_scores, training=training)
        if return_attention_scores:
            branch, weights = branch
        tokens = tokens + self.drop_path(self.norm1(branch), training=training)
        tokens = tokens + self.drop_path(self.norm2(self.mlp(tokens, training=training)), training=training)
        return (tokens, weights) if return_attention_scores else tokens
