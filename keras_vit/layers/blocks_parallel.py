"""Encoder blocks whose attention and MLP branches run side by side instead of one after the other."""

from __future__ import annotations

from functools import partial

import keras
from keras import ops

from keras_vit.layers._fast import attention
from keras_vit.layers._serializable import serializable
from keras_vit.layers.attention import expand_attention_mask
from keras_vit.layers.blocks import EncoderBlockBase
from keras_vit.layers.diff_attention import DifferentialHeads
from keras_vit.layers.mlp import ACTIVATIONS, activation_function
from keras_vit.layers.normalization import NORM_KINDS, make_norm
from keras_vit.layers.regularization import DropPath, LayerScale
from keras_vit.validation import check_choice, check_int, check_positive_int, check_rate


class _ResidualBranch(keras.layers.Layer):
    """`DropPath(LS(body(norm(x))))`, one branch of a `ParallelThingsBlock` (sublayers `norm`, `attn`|`mlp`, `ls`).

    Built and rebuilt by its block from the block's own config, so it has no config of its own.
    """

    def __init__(self, body_name: str, body, norm, layer_scale, drop_path_rate: float, **kwargs):
        super().__init__(**kwargs)
        self.body_name = body_name
        setattr(self, body_name, body)
        self.norm, self.ls = norm, layer_scale
        self.drop_path = DropPath(drop_path_rate, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.norm.build(input_shape)
        getattr(self, self.body_name).build(input_shape)
        if self.ls is not None:
            self.ls.build(input_shape)

    def call(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
        body, inputs = getattr(self, self.body_name), self.norm(tokens)
        if self.body_name != "attn":
            outputs = body(inputs, training=training)
        else:
            outputs = body(
                inputs,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
            )
        weights = None
        if return_attention_scores:
            outputs, weights = outputs
        if self.ls is not None:
            outputs = self.ls(outputs)
        outputs = self.drop_path(outputs, training=training)
        return outputs if weights is None else (outputs, weights)


@serializable
class ParallelThingsBlock(EncoderBlockBase):
    """`num_parallel` pre-norm attention branches summed, then as many MLP branches summed.

    Touvron et al. 2022, "Three things everyone should know about Vision
    Transformers" (https://arxiv.org/abs/2203.09795), as timm's
    `ParallelThingsBlock` (`vit_small_patch16_18x2_224`): wider, shallower
    networks with the same parameters. Sublayers `attns[i].norm`, `attns[i].attn`,
    `attns[i].ls`, `ffns[i].norm`, `ffns[i].mlp`, `ffns[i].ls`, as timm's.

    Args:
        num_heads, mlp_dim, ...: as `EncoderBlockBase`.
        num_parallel: int. Branches of each kind. Defaults to `2`.

    Call arguments:
        tokens: `(batch, length, dim)`.
        attention_mask: optional boolean mask (see `MultiHeadSelfAttention`).
        return_attention_scores: bool. Also return every branch's weights, the branches' heads side by
            side: `(batch, num_parallel * heads, length, length)`.
        training: bool.

    Returns:
        `(batch, length, dim)`, and the attention weights if asked for.
    """

    def __init__(
        self,
        num_heads: int,
        mlp_dim: int,
        num_parallel: int = 2,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init: float | None = None,
        layer_norm_epsilon: float = 1e-6,
        activation: str = "gelu",
        mlp_kind: str = "mlp",
        norm: str = "layer",
        attn_inner_norm: bool = False,
        mlp_inner_norm: bool = False,
        proj_bias: bool = True,
        mlp_bias: bool = True,
        attn_layer: str = "mha",
        depth: int = 0,
        **kwargs,
    ):
        self.num_parallel = check_positive_int(num_parallel, "num_parallel")
        super().__init__(
            num_heads,
            mlp_dim,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=drop_path_rate,
            layer_scale_init=layer_scale_init,
            layer_norm_epsilon=layer_norm_epsilon,
            activation=activation,
            mlp_kind=mlp_kind,
            norm=norm,
            attn_inner_norm=attn_inner_norm,
            mlp_inner_norm=mlp_inner_norm,
            proj_bias=proj_bias,
            mlp_bias=mlp_bias,
            attn_layer=attn_layer,
            depth=depth,
            **kwargs,
        )

    def create_sublayers(self) -> None:
        def branches(kind, body_name, make_body):
            return [
                _ResidualBranch(
                    body_name,
                    make_body(body_name),
                    make_norm(self.norm_kind, self.layer_norm_epsilon, "norm", self.dtype_policy),
                    self.make_layer_scale("ls"),
                    self.drop_path_rate,
                    name=f"{kind}_{i}",
                    dtype=self.dtype_policy,
                )
                for i in range(self.num_parallel)
            ]

        self.attns = branches("attns", "attn", self.make_attention)
        self.ffns = branches("ffns", "mlp", self.make_mlp)

    def build(self, input_shape):
        for branch in self.attns + self.ffns:
            branch.build(input_shape)

    def call(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
        outputs = [
            branch(
                tokens,
                training=training,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
            )
            for branch in self.attns
        ]
        if return_attention_scores:
            outputs, weights = zip(*outputs)
        tokens = tokens + sum(outputs[1:], outputs[0])
        updates = [branch(tokens, training=training) for branch in self.ffns]
        tokens = tokens + sum(updates[1:], updates[0])
        return (tokens, ops.concatenate(weights, axis=1)) if return_attention_scores else tokens

    def get_config(self):
        config = super().get_config()
        config.update(num_parallel=self.num_parallel)
        return config


@serializable
class ParallelScalingBlock(keras.layers.Layer):
    """Attention and MLP in parallel from one norm and one input projection: `x + DropPath(LS(attn + mlp))`.

    ViT-22B's block (Dehghani et al. 2023, https://arxiv.org/abs/2302.05442), as
    timm's `ParallelScalingBlock`: `in_proj` computes the MLP's hidden units and
    the queries, keys and values at once (split in that order); the attention
    output goes through `attn_out_proj`, the activated hidden units through
    `mlp_out_proj` (or both, concatenated, through one `out_proj` with
    `fuse_out_proj`). Without `qkv_bias` the MLP keeps its own bias `mlp_bias`.

    Args:
        num_heads: int. Attention heads.
        mlp_dim: int. Hidden units of the MLP (timm's `int(dim * mlp_ratio)`).
        qkv_bias: bool. Bias in `in_proj`. Defaults to `True`.
        qk_norm: bool. Normalize queries and keys per head. Defaults to `False`.
        proj_bias: bool. Bias in the output projections. Defaults to `True`.
        dropout_rate: float. Dropout on the activated hidden units. Defaults to `0`.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to `0`.
        drop_path_rate: float. Stochastic depth rate. Defaults to `0`.
        layer_scale_init: float or None. LayerScale initial value (`ls`); `None` disables it.
        layer_norm_epsilon: float. Epsilon of the norms. Defaults to `1e-6`.
        activation: the MLP's activation (see `Mlp`). Defaults to "gelu".
        norm: "layer" or "rms": kind of `in_norm` and the qk-norm. Defaults to "layer".
        fuse_out_proj: bool. One `out_proj` for both branches. Defaults to `False`.

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
        proj_bias: bool = True,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init: float | None = None,
        layer_norm_epsilon: float = 1e-6,
        activation: str = "gelu",
        norm: str = "layer",
        fuse_out_proj: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.mlp_dim = check_positive_int(mlp_dim, "mlp_dim")
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.proj_bias = proj_bias
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.attention_dropout_rate = check_rate(attention_dropout_rate, "attention_dropout_rate")
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.layer_scale_init = layer_scale_init
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.norm_kind = check_choice(norm, "norm", NORM_KINDS)
        self.fuse_out_proj = fuse_out_proj
        self.ls = None if layer_scale_init is None else LayerScale(layer_scale_init, name="ls", dtype=self.dtype_policy)

    def _make_norm(self, name: str, shape: tuple):
        layer = make_norm(self.norm_kind, self.layer_norm_epsilon, name, self.dtype_policy)
        layer.build(shape)
        return layer

    def _dense(self, units: int, use_bias: bool, name: str, input_shape) -> keras.layers.Dense:
        layer = keras.layers.Dense(units, use_bias=use_bias, name=name, dtype=self.dtype_policy)
        layer.build(input_shape)
        return layer

    def build(self, input_shape):
        dim = input_shape[-1]
        self.in_norm = self._make_norm("in_norm", input_shape)
        self.in_proj = self._dense(self.mlp_dim + 3 * dim, self.qkv_bias, "in_proj", input_shape)
        self.mlp_bias = None
        if not self.qkv_bias:  # with qkv_bias the MLP's bias is part of in_proj's
            self.mlp_bias = self.add_weight(shape=(self.mlp_dim,), initializer="zeros", name="mlp_bias")
        self._build_attention(dim)
        if self.fuse_out_proj:
            self.out_proj = self._dense(dim, self.proj_bias, "out_proj", (None, dim + self.mlp_dim))
        else:
            self.attn_out_proj = self._dense(dim, self.proj_bias, "attn_out_proj", input_shape)
            self.mlp_out_proj = self._dense(dim, self.proj_bias, "mlp_out_proj", (None, self.mlp_dim))
        if self.ls is not None:
            self.ls.build(input_shape)
        self.mlp_dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)
        self.drop_path = DropPath(self.drop_path_rate, dtype=self.dtype_policy)

    def _build_attention(self, dim: int):
        if dim % self.num_heads:
            raise ValueError(
                f"The token dimension {dim} is not divisible by num_heads={self.num_heads}. "
                "Choose a hidden dim that is a multiple of the number of heads."
            )
        self.head_dim = dim // self.num_heads
        self.q_norm = self.k_norm = None
        if self.qk_norm:
            shape = (None, None, None, self.head_dim)
            self.q_norm, self.k_norm = self._make_norm("q_norm", shape), self._make_norm("k_norm", shape)
        self.attention_dropout = keras.layers.Dropout(self.attention_dropout_rate, dtype=self.dtype_policy)

    def _attend(self, query, key, value, attention_mask, return_attention_scores, training):
        """Multi-head attention of `(batch, length, dim)` queries, keys, values: `(batch, length, dim)` out."""
        batch, length, dim = ops.shape(query)[0], ops.shape(query)[1], query.shape[-1]
        query, key, value = (
            ops.transpose(ops.reshape(x, (batch, length, self.num_heads, self.head_dim)), (0, 2, 1, 3))
            for x in (query, key, value)
        )
        if self.q_norm is not None:
            query, key = self.q_norm(query), self.k_norm(key)
        mask = None if attention_mask is None else expand_attention_mask(attention_mask, length)
        dropout = None
        if training and self.attention_dropout_rate > 0:
            dropout = partial(self.attention_dropout, training=True)
        results = attention(
            query,
            key,
            value,
            scale=self.head_dim**-0.5,
            mask=mask,
            dropout=dropout,
            return_weights=return_attention_scores,
        )
        mixed = results[0] if return_attention_scores else results
        mixed = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (batch, length, dim))
        return (mixed, results[1]) if return_attention_scores else mixed

    def call(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
        dim = tokens.shape[-1]
        projected = self.in_proj(self.in_norm(tokens))
        hidden, query, key, value = ops.split(projected, [self.mlp_dim, self.mlp_dim + dim, self.mlp_dim + 2 * dim], -1)
        if self.mlp_bias is not None:
            hidden = hidden + ops.cast(self.mlp_bias, hidden.dtype)
        mixed = self._attend(query, key, value, attention_mask, return_attention_scores, training)
        if return_attention_scores:
            mixed, weights = mixed
        hidden = self.mlp_dropout(activation_function(self.activation)(hidden), training=training)
        if self.fuse_out_proj:
            update = self.out_proj(ops.concatenate([mixed, hidden], axis=-1))
        else:
            update = self.attn_out_proj(mixed) + self.mlp_out_proj(hidden)
        if self.ls is not None:
            update = self.ls(update)
        tokens = tokens + self.drop_path(update, training=training)
        return (tokens, weights) if return_attention_scores else tokens

    def compute_output_spec(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
        outputs = keras.KerasTensor(tokens.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        length = tokens.shape[1]
        return outputs, keras.KerasTensor((tokens.shape[0], self.num_heads, length, length), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            qkv_bias=self.qkv_bias,
            qk_norm=self.qk_norm,
            proj_bias=self.proj_bias,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            drop_path_rate=self.drop_path_rate,
            layer_scale_init=self.layer_scale_init,
            layer_norm_epsilon=self.layer_norm_epsilon,
            activation=self.activation,
            norm=self.norm_kind,
            fuse_out_proj=self.fuse_out_proj,
        )
        return config


@serializable
class DiffParallelScalingBlock(ParallelScalingBlock, DifferentialHeads):
    """`ParallelScalingBlock` with differential attention and one fused `out_proj` (timm's `DiffParallelScalingBlock`).

    The attention branch is `DiffAttention`'s (https://arxiv.org/abs/2410.05258):
    two softmax maps per head, their difference weighted by lambda, a per-head
    RMSNorm `sub_norm`, scaled by `1 - lambda_init`; the MLP branch as in
    `ParallelScalingBlock`. As in `vit_dpwee_patch16_reg1_gap_256`.

    Args:
        num_heads ... norm: as `ParallelScalingBlock` (the qk-norm acts on half-heads).
        depth: int. The block's index from 0; sets lambda_init. Defaults to `0`.
        dual_lambda: bool. Two scalars `lambda_a`, `lambda_b` instead of four vectors. Defaults to `False`.

    Call arguments:
        tokens: `(batch, length, dim)`.
        attention_mask: optional boolean mask (see `MultiHeadSelfAttention`).
        return_attention_scores: bool. Also return the differential maps `(batch, heads, length, length)`.
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
        proj_bias: bool = True,
        dropout_rate: float = 0.0,
        attention_dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init: float | None = None,
        layer_norm_epsilon: float = 1e-6,
        activation: str = "gelu",
        norm: str = "layer",
        depth: int = 0,
        dual_lambda: bool = False,
        **kwargs,
    ):
        super().__init__(
            num_heads,
            mlp_dim,
            qkv_bias=qkv_bias,
            qk_norm=qk_norm,
            proj_bias=proj_bias,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=drop_path_rate,
            layer_scale_init=layer_scale_init,
            layer_norm_epsilon=layer_norm_epsilon,
            activation=activation,
            norm=norm,
            fuse_out_proj=True,
            **kwargs,
        )
        self.depth = check_int(depth, "depth", 0)
        self.dual_lambda = dual_lambda

    def _build_attention(self, dim: int):
        self._build_differential(dim)

    def _attend(self, query, key, value, attention_mask, return_attention_scores, training):
        return self._differential(query, key, value, attention_mask, return_attention_scores, training)

    def get_config(self):
        config = super().get_config()
        del config["fuse_out_proj"]
        config.update(depth=self.depth, dual_lambda=self.dual_lambda)
        return config
