"""Reduces a token sequence to one vector per image."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers._serializable import serializable
from keras_vit.validation import check_choice

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
