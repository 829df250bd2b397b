"""Keras layers of keras_vit, written with `keras.ops` so they run on every backend."""

from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.blocks import TransformerEncoderBlock
from keras_vit.layers.embeddings import PatchEmbedding, PrefixTokens
from keras_vit.layers.mlp import Mlp, gelu_erf
from keras_vit.layers.pooling import TokenPooling
from keras_vit.layers.position import (
    PositionEmbedding,
    SinCosPositionEmbedding2D,
    SinusoidalPositionEncoding,
    resample_position_embeddings,
)
from keras_vit.layers.regularization import DropPath, LayerScale

__all__ = [
    "DropPath",
    "LayerScale",
    "Mlp",
    "MultiHeadSelfAttention",
    "PatchEmbedding",
    "PositionEmbedding",
    "PrefixTokens",
    "SinCosPositionEmbedding2D",
    "SinusoidalPositionEncoding",
    "TokenPooling",
    "TransformerEncoderBlock",
    "gelu_erf",
    "resample_position_embeddings",
]
