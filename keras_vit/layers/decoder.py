"""The sequence Transformer's decoder block: causal self-attention, cross-attention, feed-forward."""

from __future__ import annotations

import keras

from keras_vit.layers._serializable import serializable
from keras_vit.layers.sequence_encoder import SequenceBlock


@serializable
class TransformerDecoderBlock(SequenceBlock):
    """Decoder layer of Vaswani et al. 2017 (https://arxiv.org/abs/1706.03762), section 3.1.

    Three sublayers, each with a residual connection: causal self-attention over
    the target prefix, attention over the encoder output ("memory"), and the
    feed-forward network. Post-norm (`norm_first=False`, the paper) normalises
    after each residual sum, pre-norm before each sublayer; the computation is
    that of `torch.nn.TransformerDecoderLayer`. Sublayers `self_attn`, `norm1`,
    `cross_attn`, `norm2`, `mlp` (`fc1`, `fc2`), `norm3`.

    Incremental decoding passes a self-attention cache (written at
    `cache_index`) and the precomputed cross-attention cache
    (`cross_attn.compute_cache(memory)`), and feeds one token per step.

    Args:
        num_heads: int. Attention heads (both attentions).
        mlp_dim: int. Inner width of the feed-forward network.
        dropout_rate: float. Residual dropout. Defaults to `0.1`.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to `0`.
        activation: "relu" (paper) or "gelu". Defaults to "relu".
        norm_first: bool. Pre-norm instead of post-norm. Defaults to `False`.
        rotary_max_wavelength: float or None. Rotary position embedding in the
            self-attention (see `MultiHeadAttention`); None disables it.
        layer_norm_epsilon: float. Defaults to `1e-5`.

    Call arguments:
        tokens: `(batch, target_length, dim)`.
        memory: `(batch, source_length, dim)` encoder output (may be None when
            `cross_attention_cache` is given).
        self_attention_mask: optional boolean mask for self-attention, True =
            attend (`(batch, target_length)` for padding); the causal mask is
            always applied on top.
        memory_mask: optional boolean mask over the memory (`(batch, source_length)`).
        self_attention_bias: optional float bias for self-attention (relative positions).
        self_attention_cache: optional `(batch, 2, max_length, heads, head_dim)`.
        cross_attention_cache: optional `(batch, 2, source_length, heads, head_dim)`.
        cache_index: int or scalar tensor. Position of the first of `tokens`.
        training: bool.

    Returns:
        `(batch, target_length, dim)`, and the updated self-attention cache when one was given.
    """

    def _make_sublayers(self) -> None:
        # Rotary positions apply to self-attention only (queries and keys share one position axis).
        self.self_attn = self._attention("self_attn", self.rotary_max_wavelength)
        self.cross_attn = self._attention("cross_attn")
        self.mlp = self._mlp()

    def build(self, tokens_shape, memory_shape=None):
        memory_shape = tokens_shape if memory_shape is None else memory_shape
        self.self_attn.build(tokens_shape)
        self.cross_attn.build(tokens_shape, memory_shape)
        self.mlp.build(tokens_shape)
        self._build_norms(3, tokens_shape)

    def call(
        self,
        tokens,
        memory=None,
        self_attention_mask=None,
        memory_mask=None,
        self_attention_bias=None,
        self_attention_cache=None,
        cross_attention_cache=None,
        cache_index=None,
        training=None,
    ):
        def self_attention(x):
            return self.self_attn(
                x,
                attention_mask=self_attention_mask,
                attention_bias=self_attention_bias,
                use_causal_mask=True,
                cache=self_attention_cache,
                cache_index=cache_index,
                training=training,
            )

        def cross_attention(x):
            return self.cross_attn(
                x, memory, attention_mask=memory_mask, cache=cross_attention_cache, training=training
            )

        x, new_cache = self._residual(tokens, self_attention, self.norm1, training)
        x, _ = self._residual(x, cross_attention, self.norm2, training)
        # the MLP applies its own dropout after `fc2`
        x, _ = self._residual(x, lambda h: self.mlp(h, training=training), self.norm3, training, dropout=False)
        return x if self_attention_cache is None else (x, new_cache)

    def compute_output_spec(self, tokens, memory=None, self_attention_cache=None, **kwargs):
        outputs = keras.KerasTensor(tokens.shape, dtype=self.compute_dtype)
        if self_attention_cache is None:
            return outputs
        return outputs, keras.KerasTensor(self_attention_cache.shape, dtype=self_attention_cache.dtype)
