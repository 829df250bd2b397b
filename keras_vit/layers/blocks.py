"""The transformer encoder blocks of the ViT family: pre-norm (ViT, DeiT, CLIP, ...) and residual post-norm."""

from __future__ import annotations

import keras

from keras_vit.layers._serializable import serializable
from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.diff_attention import DiffAttention
from keras_vit.layers.mlp import ACTIVATIONS, GatedMlp, Mlp
from keras_vit.layers.normalization import NORM_KINDS, make_norm
from keras_vit.layers.regularization import DropPath, LayerScale
from keras_vit.validation import check_choice, check_int, check_positive_int, check_rate

MLP_KINDS = ("mlp", "swiglu", "swiglu_packed")
ATTENTION_LAYERS = ("mha", "diff")


class EncoderBlockBase(keras.layers.Layer):
    """The arguments, sublayer factories and config that the encoder blocks share (timm's `Block` arguments).

    `mlp_dim` is timm's `hidden_features` (`int(dim * mlp_ratio)`) for every
    `mlp_kind`: the width of `fc1` ("mlp"), of each of `fc1_g`/`fc1_x`
    ("swiglu"), of the packed `fc1` ("swiglu_packed", whose gated product is
    half as wide), so a timm variant translates without arithmetic.
    Subclasses create their sublayers in `create_sublayers` (called by the
    constructor, so argument errors surface at construction).

    Args:
        num_heads: int. Attention heads.
        mlp_dim: int. Inner width of the MLP (timm's `int(dim * mlp_ratio)`, see `EncoderBlockBase`).
        qkv_bias: bool. Bias in the qkv projection. Defaults to `True`.
        qk_norm: bool. Normalize queries and keys per head. Defaults to `False`.
        dropout_rate: float. Dropout after attention and MLP projections. Defaults to `0`.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to `0`.
        drop_path_rate: float. Stochastic depth rate of both branches. Defaults to `0`.
        layer_scale_init: float or None. LayerScale initial value; `None` disables it.
        layer_norm_epsilon: float. Epsilon of every norm of the block. Defaults to `1e-6` (ViT/DeiT).
        activation: the MLP's (or gate's) activation: "gelu", "gelu_tanh", "quick_gelu", "relu" or "silu".
            Defaults to "gelu".
        mlp_kind: "mlp", "swiglu" (`GatedMlp` with `fc1_g`, `fc1_x`) or "swiglu_packed" (one `fc1`, gate first).
            Defaults to "mlp".
        norm: "layer" or "rms": kind of every norm of the block. Defaults to "layer".
        attn_inner_norm: bool. Norm before the attention's output projection (timm's `scale_attn_norm`).
            Defaults to `False`.
        mlp_inner_norm: bool. Norm before the MLP's `fc2` (timm's `scale_mlp_norm`). Defaults to `False`.
        proj_bias: bool. Bias in the attention's output projection. Defaults to `True`.
        mlp_bias: bool. Biases in the MLP (timm passes `proj_bias` here). Defaults to `True`.
        attn_layer: "mha" (`MultiHeadSelfAttention`) or "diff" (`DiffAttention`). Defaults to "mha".
        depth: int. The block's index from 0; sets `DiffAttention`'s lambda_init. Defaults to `0`.
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
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.mlp_dim = check_positive_int(mlp_dim, "mlp_dim")
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.attention_dropout_rate = check_rate(attention_dropout_rate, "attention_dropout_rate")
        self.drop_path_rate = check_rate(drop_path_rate, "drop_path_rate")
        self.layer_scale_init = layer_scale_init
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.mlp_kind = check_choice(mlp_kind, "mlp_kind", MLP_KINDS)
        if mlp_kind == "swiglu_packed" and mlp_dim % 2:
            raise ValueError(
                "A packed SwiGLU splits `fc1` (mlp_dim wide) into gate and value halves, so mlp_dim must be even. "
                f"Received: mlp_dim={mlp_dim}"
            )
        self.norm_kind = check_choice(norm, "norm", NORM_KINDS)
        self.attn_inner_norm = attn_inner_norm
        self.mlp_inner_norm = mlp_inner_norm
        self.proj_bias = proj_bias
        self.mlp_bias = mlp_bias
        self.attn_layer = check_choice(attn_layer, "attn_layer", ATTENTION_LAYERS)
        self.depth = check_int(depth, "depth", 0)
        self.create_sublayers()

    def create_sublayers(self) -> None:
        """Creates the sublayers whose construction needs no input shape."""

    def make_attention(self, name: str) -> keras.layers.Layer:
        """The attention sublayer (`MultiHeadSelfAttention` or `DiffAttention`) with the block's options."""
        options = dict(
            qkv_bias=self.qkv_bias,
            qk_norm=self.qk_norm,
            attention_dropout_rate=self.attention_dropout_rate,
            dropout_rate=self.dropout_rate,
            layer_norm_epsilon=self.layer_norm_epsilon,
            proj_bias=self.proj_bias,
            inner_norm=self.attn_inner_norm,
            norm=self.norm_kind,
            name=name,
            dtype=self.dtype_policy,
        )
        if self.attn_layer == "diff":
            return DiffAttention(self.num_heads, depth=self.depth, **options)
        return MultiHeadSelfAttention(self.num_heads, **options)

    def make_mlp(self, name: str) -> keras.layers.Layer:
        """The feed-forward sublayer of the block's `mlp_kind`."""
        options = dict(
            activation=self.activation,
            use_bias=self.mlp_bias,
            inner_norm=self.norm_kind if self.mlp_inner_norm else None,
            norm_epsilon=self.layer_norm_epsilon,
            dropout_rate=self.dropout_rate,
            name=name,
            dtype=self.dtype_policy,
        )
        if self.mlp_kind == "mlp":
            return Mlp(self.mlp_dim, **options)
        packed = self.mlp_kind == "swiglu_packed"
        return GatedMlp(self.mlp_dim // 2 if packed else self.mlp_dim, packed=packed, **options)

    def make_norm(self, name: str, input_shape, epsilon: float | None = None) -> keras.layers.Layer:
        layer = make_norm(
            self.norm_kind, self.layer_norm_epsilon if epsilon is None else epsilon, name, self.dtype_policy
        )
        layer.build(input_shape)
        return layer

    def make_layer_scale(self, name: str) -> LayerScale | None:
        if self.layer_scale_init is None:
            return None
        return LayerScale(self.layer_scale_init, name=name, dtype=self.dtype_policy)

    def compute_output_spec(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
        outputs = keras.KerasTensor(tokens.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        length = tokens.shape[1]
        heads = self.num_heads * getattr(self, "num_parallel", 1)
        return outputs, keras.KerasTensor((tokens.shape[0], heads, length, length), dtype="float32")

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
            activation=self.activation,
            mlp_kind=self.mlp_kind,
            norm=self.norm_kind,
            attn_inner_norm=self.attn_inner_norm,
            mlp_inner_norm=self.mlp_inner_norm,
            proj_bias=self.proj_bias,
            mlp_bias=self.mlp_bias,
            attn_layer=self.attn_layer,
            depth=self.depth,
        )
        return config


@serializable
class TransformerEncoderBlock(EncoderBlockBase):
    """`x + DropPath(LS(Attn(LN(x))))`, then `x + DropPath(LS(MLP(LN(x))))`.

    Pre-norm as in ViT (https://arxiv.org/abs/2010.11929), timm's `Block`;
    LayerScale (CaiT) and stochastic depth are optional. Sublayer names follow
    timm (`norm1`, `attn`, `ls1`, `norm2`, `mlp`, `ls2`) so checkpoints map by name.

    Takes the arguments of `EncoderBlockBase`.

    Call arguments:
        tokens: `(batch, length, dim)`.
        attention_mask: optional boolean mask (see `MultiHeadSelfAttention`).
        return_attention_scores: bool. Also return `(batch, heads, length, length)` weights.
        training: bool.

    Returns:
        `(batch, length, dim)`, and the attention weights if asked for.

    Examples:
        >>> import numpy as np
        >>> from keras_vit.layers import TransformerEncoderBlock
        >>> block = TransformerEncoderBlock(num_heads=4, mlp_dim=64, mlp_kind="swiglu", activation="silu", norm="rms")
        >>> tokens, weights = block(np.ones((2, 5, 16), "float32"), return_attention_scores=True)
        >>> tuple(tokens.shape), tuple(weights.shape)
        ((2, 5, 16), (2, 4, 5, 5))
    """

    def create_sublayers(self) -> None:
        self.attn = self.make_attention("attn")
        self.mlp = self.make_mlp("mlp")
        self.ls1, self.ls2 = self.make_layer_scale("ls1"), self.make_layer_scale("ls2")

    def build(self, input_shape):
        self.norm1, self.norm2 = self.make_norm("norm1", input_shape), self.make_norm("norm2", input_shape)
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


@serializable
class ResPostBlock(EncoderBlockBase):
    """Residual post-norm: `x + DropPath(LN(Attn(x)))`, then `x + DropPath(LN(MLP(x)))`.

    The norm closes each branch instead of opening it (Swin V2's res-post-norm,
    https://arxiv.org/abs/2111.09883; timm's `ResPostBlock`, as in
    `vit_base_patch16_rpn_224`). With `layer_scale_init` the branch norms'
    scales start at that value, which plays LayerScale's part. Sublayers
    `attn`, `norm1`, `mlp`, `norm2`.

    Takes the arguments of `EncoderBlockBase`; `layer_scale_init` is the initial
    scale of the branch norms (`None` keeps ones).

    Call arguments:
        tokens: `(batch, length, dim)`.
        attention_mask: optional boolean mask (see `MultiHeadSelfAttention`).
        return_attention_scores: bool. Also return `(batch, heads, length, length)` weights.
        training: bool.

    Returns:
        `(batch, length, dim)`, and the attention weights if asked for.
    """

    def create_sublayers(self) -> None:
        self.attn = self.make_attention("attn")
        self.mlp = self.make_mlp("mlp")

    def build(self, input_shape):
        self.attn.build(input_shape)
        self.mlp.build(input_shape)
        self.norm1, self.norm2 = self.make_norm("norm1", input_shape), self.make_norm("norm2", input_shape)
        if self.layer_scale_init is not None:
            for norm in (self.norm1, self.norm2):
                scale = norm.gamma if hasattr(norm, "gamma") else norm.scale
                scale.assign(keras.ops.full(scale.shape, self.layer_scale_init, scale.dtype))
        self.drop_path = DropPath(self.drop_path_rate, dtype=self.dtype_policy)

    def call(self, tokens, attention_mask=None, return_attention_scores=False, training=None):
        branch = self.attn(
            tokens, attention_mask=attention_mask, return_attention_scores=return_attention_scores, training=training
        )
        if return_attention_scores:
            branch, weights = branch
        tokens = tokens + self.drop_path(self.norm1(branch), training=training)
        tokens = tokens + self.drop_path(self.norm2(self.mlp(tokens, training=training)), training=training)
        return (tokens, weights) if return_attention_scores else tokens
