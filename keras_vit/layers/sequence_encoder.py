"""The sequence Transformer's encoder block, post-norm (original) or pre-norm."""

from __future__ import annotations

import keras

from keras_vit.layers._serializable import serializable
from keras_vit.layers.mlp import Mlp
from keras_vit.layers.multi_head_attention import MultiHeadAttention
from keras_vit.layers.normalization import LayerNorm
from keras_vit.validation import check_positive_int, check_rate


def layer_norm(name: str, epsilon: float, dtype, shape) -> LayerNorm:
    """A built LayerNorm named `name`."""
    norm = LayerNorm(epsilon=epsilon, name=name, dtype=dtype)
    norm.build(shape)
    return norm


class SequenceBlock(keras.layers.Layer):
    """Settings, sublayers and residual wiring shared by the sequence encoder and decoder blocks.

    Not used on its own: `SequenceEncoderBlock` and `TransformerDecoderBlock`
    say which sublayers they have (`_make_sublayers`) and how they chain them
    (`call`, through `_residual`). The arguments are those of both blocks.
    """

    def __init__(
        self,
        num_heads: int,
        mlp_dim: int,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        rotary_max_wavelength: float | None = None,
        layer_norm_epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.mlp_dim = check_positive_int(mlp_dim, "mlp_dim")
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.attention_dropout_rate = check_rate(attention_dropout_rate, "attention_dropout_rate")
        self.activation = activation
        self.norm_first = bool(norm_first)
        self.rotary_max_wavelength = rotary_max_wavelength
        self.layer_norm_epsilon = layer_norm_epsilon
        self._make_sublayers()

    def _make_sublayers(self) -> None:
        """Creates the attention and feed-forward sublayers (in weight order)."""
        raise NotImplementedError

    def _attention(self, name: str, rotary_max_wavelength: float | None = None) -> MultiHeadAttention:
        return MultiHeadAttention(
            self.num_heads,
            attention_dropout_rate=self.attention_dropout_rate,
            rotary_max_wavelength=rotary_max_wavelength,
            name=name,
            dtype=self.dtype_policy,
        )

    def _mlp(self) -> Mlp:
        return Mlp(
            self.mlp_dim,
            dropout_rate=self.dropout_rate,
            activation=self.activation,
            name="mlp",
            dtype=self.dtype_policy,
        )

    def _build_norms(self, count: int, shape) -> None:
        for i in range(1, count + 1):
            setattr(self, f"norm{i}", layer_norm(f"norm{i}", self.layer_norm_epsilon, self.dtype_policy, shape))
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def _residual(self, x, sublayer, norm, training=None, dropout: bool = True):
        """`x + Drop(f(LN(x)))` (pre-norm) or `LN(x + Drop(f(x)))` (post-norm).

        Returns:
            `(output, extra)`: `extra` is the second item when `sublayer`
            returns a pair (an updated attention cache), else None.
        """
        result = sublayer(norm(x) if self.norm_first else x)
        branch, extra = result if isinstance(result, tuple) else (result, None)
        if dropout:
            branch = self.dropout(branch, training=training)
        return (x + branch if self.norm_first else norm(x + branch)), extra

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            activation=self.activation,
            norm_first=self.norm_first,
            rotary_max_wavelength=self.rotary_max_wavelength,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


@serializable
class SequenceEncoderBlock(SequenceBlock):
    """Self-attention and feed-forward sublayers with residual connections (Vaswani et al. 2017).

    Post-norm (`norm_first=False`, the paper, https://arxiv.org/abs/1706.03762):
    `x = LN(x + Drop(Attn(x)))`, `x = LN(x + Drop(FFN(x)))`. Pre-norm
    (`norm_first=True`, Xiong et al. 2020, https://arxiv.org/abs/2002.04745):
    `x = x + Drop(Attn(LN(x)))`, `x = x + Drop(FFN(LN(x)))`. Same computation as
    `torch.nn.TransformerEncoderLayer` with `norm_first` set alike; sublayers
    `self_attn`, `norm1`, `mlp` (`fc1`, `fc2`), `norm2`.

    Args:
        num_heads: int. Attention heads.
        mlp_dim: int. Inner width of the feed-forward network.
        dropout_rate: float. Residual dropout (on each sublayer's output and
            after the FFN activation). Defaults to `0.1`.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to `0`.
        activation: "relu" (paper) or "gelu". Defaults to "relu".
        norm_first: bool. Pre-norm instead of post-norm. Defaults to `False`.
        rotary_max_wavelength: float or None. Rotary position embedding in the
            self-attention (see `MultiHeadAttention`); None disables it.
        layer_norm_epsilon: float. Defaults to `1e-5` (PyTorch, fairseq).

    Call arguments:
        tokens: `(batch, length, dim)`.
        attention_mask: optional boolean mask, True where attention is allowed
            (`(batch, length)` for padding).
        attention_bias: optional float bias (e.g. `RelativePositionBias` output).
        training: bool.

    Returns:
        `(batch, length, dim)`.
    """

    def _make_sublayers(self) -> None:
        self.self_attn = self._attention("self_attn", self.rotary_max_wavelength)
        self.mlp = self._mlp()

    def build(self, input_shape):
        self.self_attn.build(input_shape)
        self.mlp.build(input_shape)
        self._build_norms(2, input_shape)

    def call(self, tokens, attention_mask=None, attention_bias=None, training=None):
        def self_attention(x):
            return self.self_attn(x, attention_mask=attention_mask, attention_bias=attention_bias, training=training)

        x, _ = self._residual(tokens, self_attention, self.norm1, training)
        # the MLP applies its own dropout after `fc2`
        x, _ = self._residual(x, lambda h: self.mlp(h, training=training), self.norm2, training, dropout=False)
        return x

    def compute_output_spec(self, tokens, attention_mask=None, attention_bias=None, training=None):
        return keras.KerasTensor(tokens.shape, dtype=self.compute_dtype)
