"""Scaled dot-product attention over heads, with its backward written out for TensorFlow graphs.

Logits and softmax run in float32 (DESIGN: numerics); the weights mix the
values in the values' dtype. Autodiff's softmax backward multiplies the n x n
weights by their upstream gradient and sums each row; those row sums equal
`dO_i . O_i` over the head dimension (the identity FlashAttention uses, Dao et
al. 2022, https://arxiv.org/abs/2205.14135), a quarter of the elements at the
CIFAR model's 65 tokens of 16-dim heads. TensorFlow's op-by-op executor runs
every n x n pass as its own kernel, so in its graphs the backward is written
out, with the softmax part as one XLA kernel (`xla_elementwise`) that also
casts the logits' gradient to the values' dtype, so that under mixed precision
the query and key gradients come from half-precision matmuls, as every other
gradient matmul does (train steps 1.03-1.06x faster; README, Benchmarks).
XLA train steps fuse autodiff's graph themselves and keep it.
"""

from __future__ import annotations

from collections.abc import Callable

from keras import ops

from keras_vit.layers._tf_graph import backward_scope, tensorflow_op_by_op
from keras_vit.layers.xla_elementwise import scaled_softmax_backward


def dot_product_attention(query, key, value, scale: float, bias=None, weights_dropout: Callable | None = None) -> tuple:
    """`softmax(query key^T * scale + bias) value` over `(batch, heads, tokens, head_dim)` inputs.

    Args:
        query, key, value: `(batch, heads, tokens, head_dim)` tensors of one dtype.
        scale: float multiplying the queries, usually `1 / sqrt(head_dim)`.
        bias: optional float32 tensor added to the logits, broadcastable to
            `(batch, heads, queries, keys)` (an attention mask's; no gradient flows to it).
        weights_dropout: optional callable applied to the weights before they mix the
            values (active attention dropout); autodiff then runs the backward.

    Returns:
        `(outputs, weights)`: outputs in the values' dtype, weights in float32.
    """
    if weights_dropout is None and tensorflow_op_by_op():
        return _attention_with_backward(scale, bias)(query, key, value)
    weights = _softmax_weights(query, key, scale, bias)
    mixing = weights if weights_dropout is None else weights_dropout(weights)
    return ops.matmul(ops.cast(mixing, value.dtype), value), weights


def _softmax_weights(query, key, scale: float, bias):
    """`softmax(query key^T * scale + bias)` in float32."""
    scaled_query, key32 = ops.cast(query, "float32") * scale, ops.cast(key, "float32")
    logits = ops.matmul(scaled_query, ops.swapaxes(key32, -1, -2))
    if bias is not None:
        logits = logits + bias
    return ops.softmax(logits, axis=-1)


def _attention_with_backward(scale: float, bias):
    """Attention as one custom-gradient function `(query, key, value) -> (outputs, weights)`.

    With weights `S`, outputs `O` and upstream gradients `dO`, `dS`:
    `dP = dO value^T + dS` and `d_logits = S * (dP - rowsum(dP * S))`, where
    `rowsum(dO value^T * S) = rowsum(dO * O)`; the `dS` terms are computed only
    when something downstream uses the weights. Query, key and value share one dtype.
    """
    import tensorflow as tf

    @ops.custom_gradient
    def attend(query, key, value):
        scope = backward_scope()
        weights = _softmax_weights(query, key, scale, bias)
        mixing = ops.cast(weights, value.dtype)
        outputs = ops.matmul(mixing, value)

        def grad(d_outputs, d_weights, variables=None):
            with tf.name_scope(scope):
                d_value = ops.matmul(ops.swapaxes(mixing, -1, -2), d_outputs)
                d_mixing = ops.matmul(d_outputs, ops.swapaxes(value, -1, -2))
                d_weights = None if _is_unconnected(d_weights) else d_weights
                d_logits = scaled_softmax_backward(weights, d_mixing, d_outputs, outputs, d_weights, scale)
                d_query = ops.matmul(d_logits, key)
                # (q^T dL)^T rather than dL^T q: the small operand is the transposed one, as in autodiff
                d_key = ops.swapaxes(ops.matmul(ops.swapaxes(query, -1, -2), d_logits), -1, -2)
                return d_query, d_key, d_value

        return (outputs, weights), grad

    return attend


def _is_unconnected(upstream) -> bool:
    """True for the zeros TensorFlow's tape feeds an output nothing downstream uses.

    Recognises the graph-mode zeros (`ZerosLike` for dynamic shapes, else a
    `Fill` of 0 or a small constant); any other tensor, eager ones included,
    takes the general (always correct) path.
    """
    import tensorflow as tf

    if upstream is None:
        return True
    if not tf.is_symbolic_tensor(upstream):
        return False
    op = upstream.op
    if op.type == "ZerosLike":
        return True
    if op.type == "Fill":
        fill = tf.get_static_value(op.inputs[1])
        return fill is not None and not fill
    if op.type == "Const":
        return not tf.get_static_value(upstream).any()
    return False
