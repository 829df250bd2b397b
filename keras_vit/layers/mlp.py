"""The transformer feed-forward networks: `Mlp` (ViT's two dense layers) and `GatedMlp` (SwiGLU/GLU)."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vit.layers._fast import dense, flatten_tokens, gelu, unflatten_tokens
from keras_vit.layers._serializable import serializable
from keras_vit.layers.normalization import NORM_KINDS, make_norm
from keras_vit.validation import check_choice, check_positive_int, check_rate

gelu_erf = gelu  # exact GELU, public under its historical name

ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "relu", "silu")


def gelu_tanh(x):
    """GELU's tanh approximation, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (SigLIP, PE)."""
    return 0.5 * x * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def quick_gelu(x):
    """OpenAI CLIP's sigmoid approximation of GELU, `x * sigmoid(1.702 x)`."""
    return x * ops.sigmoid(1.702 * x)


def activation_function(name: str):
    """The function an `activation` argument names; "gelu" is the exact (erf) GELU."""
    check_choice(name, "activation", ACTIVATIONS)
    return {"gelu": gelu, "gelu_tanh": gelu_tanh, "quick_gelu": quick_gelu, "relu": ops.relu, "silu": ops.silu}[name]


def _check_inner_norm(inner_norm: str | None) -> str | None:
    if inner_norm is not None and inner_norm not in NORM_KINDS:
        raise ValueError(f"`inner_norm` must be None, 'layer' or 'rms'. Received: inner_norm={inner_norm!r}")
    return inner_norm


class _FeedForward(keras.layers.Layer):
    """What both MLPs share: arguments, the optional inner norm, dropout, output shape and config."""

    def __init__(
        self,
        hidden_units: int,
        output_units: int | None,
        dropout_rate: float,
        activation: str,
        use_bias: bool,
        inner_norm: str | None,
        norm_epsilon: float,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_units = check_positive_int(hidden_units, "hidden_units")
        if output_units is not None:
            check_positive_int(output_units, "output_units")
        self.output_units = output_units
        self.dropout_rate = check_rate(dropout_rate, "dropout_rate")
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.use_bias = bool(use_bias)
        self.inner_norm = _check_inner_norm(inner_norm)
        self.norm_epsilon = norm_epsilon

    def _dense(self, units: int, name: str, input_shape) -> keras.layers.Dense:
        layer = keras.layers.Dense(units, use_bias=self.use_bias, name=name, dtype=self.dtype_policy)
        layer.build(input_shape)
        return layer

    def _build_tail(self, input_shape):
        """The inner norm, `fc2` and dropout, which follow the activation in both MLPs."""
        hidden_shape = tuple(input_shape[:-1]) + (self.hidden_units,)
        self.norm = None
        if self.inner_norm is not None:
            self.norm = make_norm(self.inner_norm, self.norm_epsilon, "norm", self.dtype_policy)
            self.norm.build(hidden_shape)
        self.fc2 = self._dense(self.output_units or input_shape[-1], "fc2", hidden_shape)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def _tail(self, hidden, tokens, training):
        hidden = self.dropout(hidden, training=training)
        if self.norm is not None:
            hidden = self.norm(hidden)
        outputs = self.dropout(dense(self.fc2, hidden, training), training=training)
        return unflatten_tokens(outputs, tokens)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_units=self.hidden_units,
            output_units=self.output_units,
            dropout_rate=self.dropout_rate,
            activation=self.activation,
            use_bias=self.use_bias,
            inner_norm=self.inner_norm,
            norm_epsilon=self.norm_epsilon,
        )
        return config


@serializable
class Mlp(_FeedForward):
    """Two dense layers with an activation between them: `fc2(drop(norm(drop(act(fc1(x))))))`.

    ViT's feed-forward network, as timm's `Mlp`. The activation is exact GELU
    for ViT/DeiT, tanh-GELU for SigLIP, QuickGELU for OpenAI CLIP; the optional
    inner norm on the hidden activations (timm's `norm_layer`, `scale_mlp_norm`)
    is that of some EVA and BEiT-3 style models.

    Args:
        hidden_units: int. Width of the inner layer (the "MLP dim").
        output_units: int or None. Output width; `None` keeps the input width.
        dropout_rate: float. Dropout after the activation and after `fc2`. Defaults to `0`.
        activation: "gelu" (exact, erf), "gelu_tanh", "quick_gelu" (`x * sigmoid(1.702 x)`),
            "relu" (original Transformer) or "silu". Defaults to "gelu".
        use_bias: bool. Biases in `fc1` and `fc2`. Defaults to `True`.
        inner_norm: None, "layer" or "rms". Normalization of the hidden activations
            before `fc2` (sublayer `norm`). Defaults to `None`.
        norm_epsilon: float. Epsilon of the inner norm. Defaults to `1e-6`.

    Call arguments:
        tokens: `(..., dim)`.

    Returns:
        `(..., output_units or dim)`.
    """

    def __init__(
        self,
        hidden_units: int,
        output_units: int | None = None,
        dropout_rate: float = 0.0,
        activation: str = "gelu",
        use_bias: bool = True,
        inner_norm: str | None = None,
        norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(
            hidden_units, output_units, dropout_rate, activation, use_bias, inner_norm, norm_epsilon, **kwargs
        )

    def build(self, input_shape):
        self.fc1 = self._dense(self.hidden_units, "fc1", input_shape)
        self._build_tail(input_shape)

    def call(self, tokens, training=None):
        hidden = activation_function(self.activation)(dense(self.fc1, flatten_tokens(tokens), training))
        return self._tail(hidden, tokens, training)


@serializable
class GatedMlp(_FeedForward):
    """A gated feed-forward network, `fc2(norm(act(gate) * x))` (Shazeer 2020, https://arxiv.org/abs/2002.05202).

    SwiGLU (SiLU gate) as in EVA-02, AIMv2 and DINOv3. Unpacked, the gate and
    the value come from two dense layers `fc1_g` and `fc1_x` (timm's `SwiGLU`);
    packed, from the two halves of one `fc1` of width `2 * hidden_units`, the
    gate being the first half (timm's `SwiGLUPacked`, `GluMlp(gate_last=False)`).

    Args:
        hidden_units: int. Width of the gated product (timm's SwiGLU `hidden_features`;
            half of the packed `fc1`'s width).
        output_units: int or None. Output width; `None` keeps the input width.
        packed: bool. One `fc1` for gate and value. Defaults to `False`.
        activation: the gate's activation, one of `Mlp`'s. Defaults to "silu".
        use_bias: bool. Biases in the dense layers. Defaults to `True`.
        inner_norm: None, "layer" or "rms". Normalization of the gated product before `fc2`. Defaults to `None`.
        norm_epsilon: float. Epsilon of the inner norm. Defaults to `1e-6`.
        dropout_rate: float. Dropout after the product and after `fc2`. Defaults to `0`.

    Call arguments:
        tokens: `(..., dim)`.

    Returns:
        `(..., output_units or dim)`.
    """

    def __init__(
        self,
        hidden_units: int,
        output_units: int | None = None,
        packed: bool = False,
        activation: str = "silu",
        use_bias: bool = True,
        inner_norm: str | None = None,
        norm_epsilon: float = 1e-6,
        dropout_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(
            hidden_units, output_units, dropout_rate, activation, use_bias, inner_norm, norm_epsilon, **kwargs
        )
        self.packed = bool(packed)

    def build(self, input_shape):
        if self.packed:
            self.fc1 = self._dense(2 * self.hidden_units, "fc1", input_shape)
        else:
            self.fc1_g = self._dense(self.hidden_units, "fc1_g", input_shape)
            self.fc1_x = self._dense(self.hidden_units, "fc1_x", input_shape)
        self._build_tail(input_shape)

    def call(self, tokens, training=None):
        flat = flatten_tokens(tokens)
        if self.packed:
            gate, value = ops.split(dense(self.fc1, flat, training), 2, axis=-1)
        else:
            gate, value = dense(self.fc1_g, flat, training), dense(self.fc1_x, flat, training)
        return self._tail(activation_function(self.activation)(gate) * value, tokens, training)

    def get_config(self):
        config = super().get_config()
        config.update(packed=self.packed)
        return config
