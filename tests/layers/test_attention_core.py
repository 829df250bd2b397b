"""The seam's attention: values and gradients against torch autograd, on every path (eager, graph, XLA)."""

import numpy as np
import pytest
import tensorflow as tf
import torch

from keras_vit.layers._fast import attention
from keras_vit.layers._fast.gradients import is_unconnected

SHAPE = (2, 3, 7, 4)  # batch, heads, tokens, head_dim
SCALE = 0.5


def _inputs():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(SHAPE).astype("float32") * 2 for _ in range(3))
    upstream_outputs = rng.standard_normal(SHAPE).astype("float32")
    upstream_weights = rng.standard_normal(SHAPE[:3] + SHAPE[2:3]).astype("float32")
    allowed = np.ones((SHAPE[0], 1, 1, SHAPE[2]), bool)
    allowed[1, ..., 5:] = False
    return q, k, v, upstream_outputs, upstream_weights, allowed


def _ours(mode, use_weights, dtype="float32", weights_dropout=None):
    q, k, v, up_o, up_w, allowed = _inputs()

    def run(q, k, v):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            outputs, weights = attention(
                q, k, v, SCALE, mask=tf.constant(allowed), dropout=weights_dropout, return_weights=True
            )
            loss = tf.reduce_sum(tf.cast(outputs, "float32") * up_o)
            if use_weights:
                loss += tf.reduce_sum(weights * up_w)
        return (outputs, weights, *tape.gradient(loss, [q, k, v]))

    run = run if mode == "eager" else tf.function(run, jit_compile=mode == "xla")
    results = run(*(tf.cast(tf.constant(a), dtype) for a in (q, k, v)))
    return [tf.cast(r, "float32").numpy() for r in results]


@pytest.mark.parametrize("use_weights", [False, True], ids=["outputs-only", "weights-used"])
@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_values_and_gradients_match_torch(mode, use_weights):
    q, k, v, up_o, up_w, allowed = _inputs()
    bias = np.where(allowed, 0.0, -1e9).astype("float32")
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    weights = torch.softmax(tq * SCALE @ tk.transpose(-1, -2) + torch.from_numpy(bias), dim=-1)
    outputs = weights @ tv
    loss = (outputs * torch.from_numpy(up_o)).sum()
    if use_weights:
        loss = loss + (weights * torch.from_numpy(up_w)).sum()
    loss.backward()
    expected = [outputs, weights, tq.grad, tk.grad, tv.grad]
    for name, ours, ref in zip(["outputs", "weights", "dq", "dk", "dv"], _ours(mode, use_weights), expected):
        np.testing.assert_allclose(ours, ref.detach().numpy(), atol=2e-5, err_msg=name)


def test_bfloat16_gradients_match_autodiff():
    """Under bf16 the row sums come from the rounded outputs; the gradients stay within bf16 error."""
    custom = _ours("graph", use_weights=False, dtype="bfloat16")
    autodiff = _ours("graph", use_weights=False, dtype="bfloat16", weights_dropout=lambda w: w)
    for name, ours, ref in zip(["outputs", "weights", "dq", "dk", "dv"], custom, autodiff):
        assert np.linalg.norm(ours - ref) <= 2e-2 * np.linalg.norm(ref), name


def test_unused_weights_skip_their_backward_terms():
    """The zeros TensorFlow's tape feeds an unused output are recognised, in graphs with dynamic shapes too."""
    seen = []

    @tf.custom_gradient
    def probe(x):
        def grad(d_first, d_second):
            seen.append(is_unconnected(d_second))
            return d_first

        return (x * 1.0, x * 2.0), grad

    @tf.function(input_signature=[tf.TensorSpec([None, 3])])
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            first, _ = probe(x)
            loss = tf.reduce_sum(first)
        return tape.gradient(loss, x)

    step(tf.ones((2, 3)))
    tf.function(step.python_function)(tf.ones((2, 3)))  # static shapes
    assert seen == [True, True]
    assert not is_unconnected(tf.zeros((2, 3)))  # eager tensors take the general path
    with tf.Graph().as_default():
        assert is_unconnected(tf.zeros((4, 100, 100)))  # Fill
        assert is_unconnected(tf.zeros((2, 3)))  # Const
        assert is_unconnected(tf.zeros_like(tf.ones((2, 3))))  # ZerosLike
        assert not is_unconnected(tf.ones((4, 100, 100)))
        assert not is_unconnected(tf.constant([[0.0, 1.0]]))
