"""The pre-norm transformer encoder block used by ViT and DeiT."""

from __future__ import annotations

import keras

from keras_vit.layers._serializable import serializable
from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.mlp import Mlp
from keras_vit.layers.normalization import LayerNorm
from keras_vit.layers.regularization import DropPath, LayerScale
from keras_vit.validation import check_rate


@serializable
class TransformerEncoderBlock(keras.layers.Layer):
    """`x + DropPath(LS(Attn(LN(x))))`, then `x + DropPath(LS(MLP(LN(x))))`.

    Pre-norm as in ViT (https://arxiv.org/abs/2010.11929); LayerScale (CaiT)
    and stochastic depth are optional. Sublayer names follow timm (`norm1`,
    `attn`, `ls1`, `norm2`, `mlp`, `ls2`) so checkpoints map by name.

    Args:
        num_heads: int. Attention heads.
        mlp_dim: int. Inner width of the MLP.
        qkv_bias: bool. Bias in the qkv projection. Defaults to `True`.
        qk_norm: bool. LayerNorm on queries and keys. Defaults to `False`.
        dropout_rate: float. Dropout after attention and MLP projections. Defaults to `0`.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to `0`.
        drop_path_rate: float. Stochastic depth rate of both branches. Defaults to `0`.
        layer_scale_init: float or None. LayerScale initial value; `None` disables it.
        layer_norm_epsilon: float. Defaults to `1e-6` (ViT/DeiT).

    Call arguments:
        tokens: `(batch, length, dim)`.
        attention_mask: optional boolean mask (see `MultiHeadSelfAttention`).
        return_attention_scores: bool. Also return `(batch, heads, length, length)` weights.
        training: bool.

    Returns:
        `(batch, length, dim)`, and the attention weights if asked for.
    """

    def __init__(
        self,
        num_heads: int,
        mlp_dim: int,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init: float | None = None,
        layer_norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.attention_dropout_rate = check_rate(attention_dropout_rate, "attention_dropout_rate")
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.layer_scale_init = layer_scale_init
        self.layer_norm_epsilon = layer_norm_epsilon
        # Created here (not in build) so argument errors surface at construction.
        self.attn = MultiHeadSelfAttention(
            num_heads,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            attention_dropout_rate=attention_dropout_rate,
            dropout_rate=dropout_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            name="attn",
            dtype=self.dtype_policy,
        )
        self.mlp = Mlp(mlp_dim, dropout_rate=dropout_rate, name="mlp", dtype=self.dtype_policy)
        self.ls1 = self.ls2 = None
        if layer_scale_init is not None:
            self.ls1 = LayerScale(layer_scale_init, name="ls1", dtype=self.dtype_policy)
            self.ls2 = LayerScale(layer_scale_init, name="ls2", dtype=self.dtype_policy)

    def build(self, input_shape):
        def norm(name):
            layer = LayerNorm(epsilon=self.layer_norm_epsilon, name=name, dtype=self.dtype_policy)
            layer.build(input_shape)
            return layer

        self.norm1, self.norm2 = norm("norm1"), norm("norm2")
        self.attn.build(input_shape)
        self.mlp.build(input_shape)
        for scale in (self.ls1, self.ls2):
            if scale is not None:
                scale.build(input_shape)
        self.drop_path = DropPath(self.drop_path_rate, dtype=self.dtype_policy)

    def call(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
        branch = self.attn(
            self.norm1(tokens),
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        if return_attention_scores:
            branch, weights = branch
        if self.ls1 is not None:
            branch = self.ls1(branch)
        tokens = tokens + self.drop_path(branch, training=training)
        branch = self.mlp(self.norm2(tokens), training=training)
        if self.ls2 is not None:
            branch = self.ls2(branch)
        tokens = tokens + self.drop_path(branch, training=training)
        return (tokens, weights) if return_attention_scores else tokens

    def compute_output_spec(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
        return self.attn.compute_output_spec(tokens, return_attention_scores=return_attention_scores)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            qkv_bias=self.qkv_bias,
            qk_norm=self.qk_norm,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            drop_path_rate=self.drop_path_rate,
            layer_scale_init=self.layer_scale_init,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config
