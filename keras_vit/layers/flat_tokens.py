"""Dense layers on rank-2 tokens, so TensorFlow's CPU graph rewriter can fuse around their matmuls."""

from __future__ import annotations

from keras import ops


def flatten_tokens(tokens):
    """`(..., dim)` -> `(n, dim)`: a `Dense` on rank-2 input is one plain matmul.

    On rank-3 input Keras' TensorFlow backend wraps the matmul in reshapes,
    which keeps the graph rewriter from fusing bias and activation into it.
    """
    return tokens if len(tokens.shape) == 2 else ops.reshape(tokens, (-1, tokens.shape[-1]))


def unflatten_tokens(flat, like):
    """Inverse of `flatten_tokens`: `(n, units)` back to `like`'s leading shape."""
    if len(like.shape) == 2:
        return flat
    return ops.reshape(flat, tuple(ops.shape(like)[:-1]) + (flat.shape[-1],))
