"""The modern ViT family's layers beyond parity: mixed precision, gradients to every weight, the JAX backend."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit import layers as L

# Each: (class, keyword arguments); all take `(batch, length, 16)` tokens.
FAMILY_LAYERS = {
    "rms_norm": (L.RMSNorm, dict()),
    "mlp_quick_gelu_rms": (L.Mlp, dict(hidden_units=24, activation="quick_gelu", inner_norm="rms")),
    "swiglu": (L.GatedMlp, dict(hidden_units=20, inner_norm="layer")),
    "swiglu_packed": (L.GatedMlp, dict(hidden_units=20, packed=True)),
    "attention_pool": (L.AttentionPoolLatent, dict(num_heads=4, num_latents=2, activation="gelu_tanh")),
    "attention_qk_rms_inner": (L.MultiHeadSelfAttention, dict(num_heads=4, qk_norm=True, norm="rms", inner_norm=True)),
    "diff_attention": (L.DiffAttention, dict(num_heads=2, qk_norm=True, depth=3)),
    "block_swiglu_rms": (
        L.TransformerEncoderBlock,
        dict(num_heads=4, mlp_dim=32, mlp_kind="swiglu", norm="rms", layer_scale_init=0.1, qk_norm=True),
    ),
    "block_diff": (L.TransformerEncoderBlock, dict(num_heads=2, mlp_dim=32, attn_layer="diff", depth=2)),
    "res_post": (L.ResPostBlock, dict(num_heads=4, mlp_dim=32, layer_scale_init=0.5)),
    "parallel_things": (L.ParallelThingsBlock, dict(num_heads=4, mlp_dim=32, layer_scale_init=0.1)),
    "parallel_scaling": (L.ParallelScalingBlock, dict(num_heads=4, mlp_dim=40, qkv_bias=False, qk_norm=True)),
    "diff_parallel_scaling": (L.DiffParallelScalingBlock, dict(num_heads=2, mlp_dim=40, qkv_bias=False, depth=1)),
}
RETURNS_WEIGHTS = {"attention_pool", "attention_qk_rms_inner", "diff_attention", "block_swiglu_rms", "block_diff"}
RETURNS_WEIGHTS |= {"res_post", "parallel_things", "parallel_scaling", "diff_parallel_scaling"}


def randomized(case, rng, dtype="float32"):
    """The layer built on `(2, 7, 16)` tokens with every weight drawn at random (no zero biases or unit scales)."""
    cls, kwargs = FAMILY_LAYERS[case]
    layer = cls(**kwargs, dtype=dtype)
    layer.build((2, 7, 16))
    layer.set_weights([0.3 * rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])
    return layer


def inputs(rng):
    return rng.standard_normal((2, 7, 16)).astype("float32")


@pytest.mark.parametrize("case", sorted(FAMILY_LAYERS))
def test_mixed_bfloat16_follows_float32(case, rng):
    """Under mixed_bfloat16 the outputs stay within bfloat16 rounding of float32's, attention weights in float32."""
    x = inputs(rng)
    reference = randomized(case, np.random.default_rng(1))
    mixed = randomized(case, np.random.default_rng(1), dtype="mixed_bfloat16")
    expected = keras.ops.convert_to_numpy(reference(x))
    outputs = mixed(x)
    assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
    outputs = keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32"))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(outputs, expected, atol=0.05 * scale)
    if case in RETURNS_WEIGHTS:
        _, weights = mixed(x, return_attention_scores=True)
        assert keras.backend.standardize_dtype(weights.dtype) == "float32"


@pytest.mark.parametrize("case", sorted(FAMILY_LAYERS))
def test_every_weight_gets_a_gradient(case, rng):
    """A squared-output loss reaches every trainable weight (none left disconnected by a mapping slip)."""
    layer, x = randomized(case, rng), tf.constant(inputs(rng))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x, training=True)))
    gradients = tape.gradient(loss, layer.trainable_variables)
    dead = [v.path for v, g in zip(layer.trainable_variables, gradients) if g is None or not np.any(g.numpy())]
    assert not dead, f"no gradient reaches {dead}"


JAX_SCRIPT = """
import sys
import numpy as np
import keras
from keras_vit import layers as L
from tests.layers.test_family_layers import FAMILY_LAYERS, RETURNS_WEIGHTS

x = np.random.default_rng(1).standard_normal((2, 7, 16)).astype("float32")
results = {}
for case, (cls, kwargs) in sorted(FAMILY_LAYERS.items()):
    layer = cls(**kwargs)
    layer.build((2, 7, 16))
    layer.set_weights([np.asarray(w) for w in np.load(sys.argv[1] + "/" + case + ".npz").values()])
    results[case] = keras.ops.convert_to_numpy(layer(x))
    if case in RETURNS_WEIGHTS:
        results[case + "_weights"] = keras.ops.convert_to_numpy(layer(x, return_attention_scores=True)[1])
np.savez(sys.argv[1] + "/" + keras.backend.backend() + ".npz", **results)
"""


@pytest.mark.slow  # two interpreters importing Keras' backends: minutes on 2 shared cores
def test_family_layers_give_tensorflow_values_on_jax(tmp_path):
    """Each new layer with the same weights computes on JAX (fused attention where it applies) what it does on TF."""
    rng = np.random.default_rng(0)
    for case in FAMILY_LAYERS:
        weights = randomized(case, rng).get_weights()
        np.savez(tmp_path / f"{case}.npz", *weights)
    (tmp_path / "run.py").write_text(textwrap.dedent(JAX_SCRIPT))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for backend in ("tensorflow", "jax"):
        env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=root)
        proc = subprocess.run(
            [sys.executable, str(tmp_path / "run.py"), str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=root,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    tensorflow, jax = np.load(tmp_path / "tensorflow.npz"), np.load(tmp_path / "jax.npz")
    assert sorted(jax.files) == sorted(tensorflow.files)
    for name in tensorflow.files:
        np.testing.assert_allclose(jax[name], tensorflow[name], atol=1e-4, err_msg=name)
