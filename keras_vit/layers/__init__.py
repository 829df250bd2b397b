"""Keras layers of keras_vit, written with `keras.ops` so they run on every backend.

Their TensorFlow speed paths sit behind one switch: `set_fast_paths(False)`,
`with fast_paths(False):` or the environment variable `KERAS_VIT_FAST_PATHS=0`.
"""

from keras_vit.layers import compat as _compat  # noqa: F401  (registers 0.1.0 layer names)
from keras_vit.layers._fast import fast_paths, fast_paths_enabled, set_fast_paths
from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.blocks import EncoderBlockBase, ResPostBlock, TransformerEncoderBlock
from keras_vit.layers.blocks_parallel import DiffParallelScalingBlock, ParallelScalingBlock, ParallelThingsBlock
from keras_vit.layers.decoder import TransformerDecoderBlock
from keras_vit.layers.diff_attention import DiffAttention
from keras_vit.layers.embeddings import PatchEmbedding, PrefixTokens
from keras_vit.layers.mlp import GatedMlp, Mlp, gelu_erf
from keras_vit.layers.multi_head_attention import MultiHeadAttention
from keras_vit.layers.normalization import LayerNorm, RMSNorm, layer_norm_last_axis, make_norm
from keras_vit.layers.pooling import AttentionPoolLatent, TokenPooling
from keras_vit.layers.position import (
    PositionEmbedding,
    SinCosPositionEmbedding2D,
    SinusoidalPositionEncoding,
    resample_position_embeddings,
)
from keras_vit.layers.regularization import DropPath, LayerScale
from keras_vit.layers.relative_position import RelativePositionBias
from keras_vit.layers.sequence_embeddings import LearnedPositionEncoding, TokenEmbedding
from keras_vit.layers.sequence_encoder import SequenceEncoderBlock

__all__ = [
    "AttentionPoolLatent",
    "DiffAttention",
    "DiffParallelScalingBlock",
    "DropPath",
    "EncoderBlockBase",
    "GatedMlp",
    "LayerNorm",
    "LayerScale",
    "LearnedPositionEncoding",
    "Mlp",
    "MultiHeadAttention",
    "MultiHeadSelfAttention",
    "ParallelScalingBlock",
    "ParallelThingsBlock",
    "PatchEmbedding",
    "PositionEmbedding",
    "PrefixTokens",
    "RMSNorm",
    "RelativePositionBias",
    "ResPostBlock",
    "SequenceEncoderBlock",
    "SinCosPositionEmbedding2D",
    "SinusoidalPositionEncoding",
    "TokenEmbedding",
    "TokenPooling",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "fast_paths",
    "fast_paths_enabled",
    "gelu_erf",
    "layer_norm_last_axis",
    "make_norm",
    "resample_position_embeddings",
    "set_fast_paths",
]
