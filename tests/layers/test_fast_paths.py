"""The speed-path switch: every layer gives the same values and gradients with the fast paths on and off.

Each layer runs a training step's forward and backward (gradients of a random
projection of its outputs w.r.t. its inputs and every trainable variable) in
eager mode, in a `tf.function` and under XLA, in float32 and mixed bfloat16,
once with `KERAS_VIT_FAST_PATHS` on and once off (the plain `keras.ops`
reference with autodiff). Float32: equal within 1e-4 relative + 1e-5 absolute
(summation order differs). Mixed bfloat16: both paths are compared with the
float32 run, and the fast path's error (norm of the difference) must stay
within 2% of the tensor's norm (one bf16 rounding is 0.4%) plus twice the
reference path's own error plus a noise floor of two bf16 roundings (2^-7)
per element of unit scale. The last two cover gradients that vanish in exact
arithmetic (key bias, k-norm offset: softmax ignores a shift shared by all
keys): pure bf16 noise on both paths, larger on the fast one, whose attention
backward rounds the logits' gradient to bf16 before the key matmul.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit import layers as L
from keras_vit.layers import _fast


def _mha_causal(layer, x):
    mask = np.ones((x.shape[0], x.shape[1]), bool)
    mask[-1, -2:] = False  # padding at the end of the last sequence
    return layer(x, attention_mask=mask, use_causal_mask=True, training=True)


def _mha_cross(layer, x):
    padding = np.broadcast_to(np.arange(x.shape[1]) < 6, (x.shape[0], x.shape[1]))
    return layer(x[:, :5], value=x, attention_mask=padding, training=True)


def _mha_bias(layer, x):
    bias = tf.constant(np.random.default_rng(5).standard_normal((1, 2, x.shape[1], x.shape[1])), "float32")
    return layer(x, attention_bias=bias, training=True)


def _self_attention_masked(layer, x):
    mask = np.ones((x.shape[0], x.shape[1]), bool)
    mask[0, -3:] = False
    return layer(x, attention_mask=mask, training=True)


CASES = {
    "layer_norm": (lambda: L.LayerNorm(epsilon=1e-6), (2, 7, 16), None),
    "mlp": (lambda: L.Mlp(32), (2, 7, 16), None),
    "self_attention": (lambda: L.MultiHeadSelfAttention(2), (2, 7, 16), _self_attention_masked),
    "self_attention_qk_norm": (lambda: L.MultiHeadSelfAttention(4, qk_norm=True), (2, 7, 16), None),
    "patch_embedding": (lambda: L.PatchEmbedding(4, 16), (2, 8, 12, 3), None),
    "encoder_block": (lambda: L.TransformerEncoderBlock(2, 32, layer_scale_init=0.5), (2, 7, 16), None),
    "mha_causal_padded": (lambda: L.MultiHeadAttention(2), (2, 7, 16), _mha_causal),
    "mha_cross": (lambda: L.MultiHeadAttention(2), (2, 7, 16), _mha_cross),
    "mha_bias": (lambda: L.MultiHeadAttention(2), (2, 7, 16), _mha_bias),
}


def _values_and_gradients(make, shape, apply, mode, fast):
    """Outputs, input gradient and variable gradients of `sum(layer(x) * upstream)` as float32 numpy."""
    keras.utils.set_random_seed(1)
    layer = make()
    rng = np.random.default_rng(2)
    x = tf.constant(rng.standard_normal(shape).astype("float32"))
    apply = apply or (lambda layer, x: layer(x, training=True))
    outputs = apply(layer, x)  # builds the layer
    upstream = tf.constant(rng.standard_normal(outputs.shape).astype("float32"))

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(apply(layer, x), "float32")
            loss = tf.reduce_sum(y * upstream)
        return [y] + tape.gradient(loss, [x] + [v.value for v in layer.trainable_variables])

    with _fast.fast_paths(fast):
        run = step if mode == "eager" else tf.function(step, jit_compile=mode == "xla")
        return [tf.cast(t, "float32").numpy() for t in run(x)]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("mode", ["eager", "graph", pytest.param("xla", marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_switch_on_and_off_agree_in_values_and_gradients(case, mode, policy):
    keras.mixed_precision.set_global_policy(policy)
    make, shape, apply = CASES[case]
    fast = _values_and_gradients(make, shape, apply, mode, fast=True)
    reference = _values_and_gradients(make, shape, apply, mode, fast=False)
    assert len(fast) == len(reference) >= 3
    if policy == "float32":
        for i, (got, want) in enumerate(zip(fast, reference)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"tensor {i}")
        return
    keras.mixed_precision.set_global_policy("float32")
    truth = _values_and_gradients(make, shape, apply, mode, fast=False)
    for i, (got, want, exact) in enumerate(zip(fast, reference, truth)):
        fast_error, reference_error = np.linalg.norm(got - exact), np.linalg.norm(want - exact)
        noise_floor = 2**-7 * np.sqrt(exact.size)  # two bf16 roundings of unit-scale terms per element
        assert fast_error <= 2e-2 * np.linalg.norm(exact) + 2 * reference_error + noise_floor, f"tensor {i}"


def _op_types(fn, *args) -> set[str]:
    """Op types in the traced graph of `fn`, the tape's nested backward functions included."""
    graph = tf.function(fn).get_concrete_function(*args).graph
    types = {op.type for op in graph.get_operations()}
    for function in graph._functions.values():
        if hasattr(function, "graph"):
            types |= {op.type for op in function.graph.get_operations()}
    return types


def test_switch_changes_what_is_traced():
    """On: the train graph holds XLA kernels (custom gradients) and the bias-first add; off: plain ops."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    block = L.TransformerEncoderBlock(2, 32)
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 5, 16)).astype("float32"))
    block(x)

    def train(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(block(x, training=True), "float32"))
        return tape.gradient(loss, block.trainable_variables)

    def xla_calls(types):
        return {"PartitionedCall", "StatefulPartitionedCall"} & types

    with _fast.fast_paths(True):
        on = _op_types(train, x)
    with _fast.fast_paths(False):
        off = _op_types(train, x)
    assert xla_calls(on) and "BiasAddGrad" not in on
    assert not xla_calls(off) and "BiasAddGrad" in off


def test_switch_is_read_at_trace_time():
    seen = []
    probe = tf.function(lambda x: seen.append(_fast.fast_paths_enabled()) or x)
    with _fast.fast_paths(False):
        probe(tf.ones(1))
    probe(tf.ones(1))  # the traced function keeps its choice: no retrace, nothing appended
    probe(tf.ones(2))  # a new trace sees the current setting
    assert seen == [False, True]


def test_switch_function_context_manager_and_env_var(monkeypatch):
    monkeypatch.delenv(_fast.ENV_VAR, raising=False)
    assert L.fast_paths_enabled()
    monkeypatch.setenv(_fast.ENV_VAR, "0")
    assert not L.fast_paths_enabled()
    with L.fast_paths(True):
        assert L.fast_paths_enabled()
        with L.fast_paths(False):
            assert not L.fast_paths_enabled()
        assert L.fast_paths_enabled()
    assert not L.fast_paths_enabled()
    try:
        L.set_fast_paths(True)
        assert L.fast_paths_enabled()
    finally:
        _fast._override.clear()
    monkeypatch.setenv(_fast.ENV_VAR, "maybe")
    with pytest.raises(ValueError, match=r"KERAS_VIT_FAST_PATHS=.*maybe"):
        L.fast_paths_enabled()
    with pytest.raises(ValueError, match=r"Received: enabled='no'"):
        L.set_fast_paths("no")


def test_attention_weights_are_not_materialized_unless_asked(rng):
    """The block's forward without `return_attention_scores` returns no weights; with it, rows sum to one."""
    block = L.TransformerEncoderBlock(2, 32)
    x = rng.standard_normal((2, 5, 16)).astype("float32")
    out = block(x)
    assert not isinstance(out, tuple)
    tokens, weights = block(x, return_attention_scores=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tokens), keras.ops.convert_to_numpy(out), atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights).sum(-1), 1.0, atol=1e-5)


_JAX_FUSED_CHECK = """
import numpy as np, keras
from keras_vit import layers as L
from keras_vit.layers import _fast
assert keras.backend.backend() == "jax"
x = np.random.default_rng(0).standard_normal((2, 9, 16)).astype("float32")
mask = np.ones((2, 9), bool); mask[1, -3:] = False
layer = L.MultiHeadSelfAttention(2)
fused = keras.ops.convert_to_numpy(layer(x, attention_mask=mask))  # no weights asked: dot_product_attention
reference, _ = layer(x, attention_mask=mask, return_attention_scores=True)  # the float32 softmax path
np.testing.assert_allclose(fused, keras.ops.convert_to_numpy(reference), rtol=1e-5, atol=1e-5)
q = keras.ops.convert_to_tensor(np.zeros((1, 2, 3, 4), "float32"))
assert _fast._fused_attention_exact(q, q) and not _fast._fused_attention_exact(keras.ops.cast(q, "bfloat16"), q)
wide = keras.ops.convert_to_tensor(np.zeros((1, 2, 3, 8), "float32"))  # differential attention's values
assert not _fast._fused_attention_exact(q, wide)
print("OK")
"""


def test_jax_backend_uses_the_fused_kernel_when_weights_are_not_asked():
    """On JAX, float32 attention without weights goes through keras.ops.dot_product_attention, same values."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(root), JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", _JAX_FUSED_CHECK], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-2000:]
