"""The XLA-compiled train-time kernels (GELU, layer-norm ends) against torch, and where they are (not) used."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

from keras_vit.layers import LayerNorm, Mlp, fast_paths
from keras_vit.layers._fast.kernels import gelu_erf_with_xla


def _torch_gelu_and_grad(x, upstream):
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.gelu(tx, approximate="none")
    (y * torch.from_numpy(upstream.astype("float64"))).sum().backward()
    return y.detach().numpy(), tx.grad.numpy()


@tf.function
def _value_and_grad(x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = gelu_erf_with_xla(x)
        loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
    return y, tape.gradient(loss, x)


def test_gelu_value_and_gradient_match_torch_in_float32():
    x = np.linspace(-8, 8, 4001).astype("float32").reshape(1, -1)
    upstream = np.random.default_rng(0).standard_normal(x.shape).astype("float32")
    y, grad = (t.numpy() for t in _value_and_grad(tf.constant(x), tf.constant(upstream)))
    ref_y, ref_grad = _torch_gelu_and_grad(x, upstream)
    np.testing.assert_allclose(y, ref_y, atol=2e-6)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-5)


def test_gelu_in_bfloat16_is_the_float32_result_rounded_once():
    """Half-precision inputs are computed in float32: one bf16 rounding of the output and gradient."""
    x = np.linspace(-8, 8, 4001).astype("float32").reshape(1, -1)
    x = tf.cast(tf.cast(x, "bfloat16"), "float32").numpy()  # inputs exactly representable in bf16
    upstream = tf.cast(tf.cast(np.random.default_rng(1).standard_normal(x.shape), "bfloat16"), "float32").numpy()
    y, grad = _value_and_grad(tf.constant(x, "bfloat16"), tf.constant(upstream))
    assert y.dtype == tf.bfloat16 and grad.dtype == tf.bfloat16
    ref_y, ref_grad = _torch_gelu_and_grad(x, upstream)
    for ours, ref in ((y, ref_y), (grad, ref_grad)):
        ours = tf.cast(ours, "float32").numpy()
        np.testing.assert_allclose(ours, ref, rtol=2**-8, atol=1e-6)


def _xla_calls(fn, *args) -> int:
    """How many XLA-compiled function calls the traced graph of `fn` makes."""
    graph = tf.function(fn).get_concrete_function(*args).graph
    ops = list(graph.get_operations())
    for function in graph._functions.values():  # the tape's backward lives in nested functions
        ops += list(function.graph.get_operations()) if hasattr(function, "graph") else []
    return sum(
        op.type in ("PartitionedCall", "StatefulPartitionedCall") and op.get_attr("_XlaMustCompile")
        for op in ops
        if "_XlaMustCompile" in op.node_def.attr
    )


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_mlp_uses_the_xla_gelu_when_training_only_and_matches_plain_gradients(dtype):
    keras.mixed_precision.set_global_policy(dtype)
    try:
        mlp = Mlp(32)
        x = tf.constant(np.random.default_rng(2).standard_normal((4, 5, 8)).astype("float32"))
        mlp(x)

        def train(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.cast(mlp(x, training=True), "float32") ** 2)
            return loss, tape.gradient(loss, mlp.trainable_variables)

        def predict(x):
            return mlp(x)

        assert _xla_calls(train, x) >= 1
        assert _xla_calls(predict, x) == 0
        loss, grads = tf.function(train)(x)
        with fast_paths(False):  # the plain erf ops and autodiff
            assert _xla_calls(train, x) == 0
            ref_loss, ref_grads = tf.function(train)(x)
        tolerance = 1e-5 if dtype == "float32" else 2e-2
        np.testing.assert_allclose(loss.numpy(), ref_loss.numpy(), rtol=tolerance)
        for ours, ref in zip(grads, ref_grads):
            np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=tolerance, atol=tolerance)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_layer_norm_uses_xla_kernels_when_training_only_and_matches_torch_in_bfloat16():
    norm = LayerNorm(epsilon=1e-6, dtype="mixed_bfloat16")
    rng = np.random.default_rng(3)
    x = tf.cast(tf.constant((rng.standard_normal((4, 5, 16)) * 3 + 1).astype("float32")), "bfloat16")
    norm.build(x.shape)
    norm.set_weights([rng.standard_normal(16).astype("float32"), rng.standard_normal(16).astype("float32")])
    upstream = rng.standard_normal((4, 5, 16)).astype("float32")

    def train(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = norm(x)
            loss = tf.reduce_sum(tf.cast(outputs, "float32") * upstream)
        return outputs, tape.gradient(loss, [x, norm.gamma.value, norm.beta.value])

    assert _xla_calls(train, x) == 2  # the forward's affine end and the input gradient
    assert _xla_calls(norm, x) == 0
    outputs, (grad_x, grad_gamma, grad_beta) = tf.function(train)(x)
    assert outputs.dtype == tf.bfloat16 and grad_x.dtype == tf.bfloat16

    tx = torch.tensor(tf.cast(x, "float32").numpy(), requires_grad=True)
    tg, tb = (torch.tensor(w, requires_grad=True) for w in norm.get_weights())
    out = torch.nn.functional.layer_norm(tx, (16,), tg, tb, eps=1e-6)
    (out * torch.from_numpy(upstream)).sum().backward()
    for ours, ref in ((outputs, out), (grad_x, tx.grad), (grad_gamma, tg.grad), (grad_beta, tb.grad)):
        ours, ref = tf.cast(ours, "float32").numpy(), ref.detach().numpy()
        np.testing.assert_allclose(ours, ref, rtol=2**-7, atol=2e-2 * np.abs(ref).max())
