"""The fused optimizer updates against Keras' own Adam, AdamW and SGD, step by step, and where they are used."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit.training import FusedAdam, LayerDecayAdamW, LayerDecaySGD
from keras_vit.training.sequence import transformer_optimizer

SHAPES = [(5, 7), (7,), (3, 4, 6)]
STEPS = 4


def _gradients(rng, sparse=False):
    grads = [[rng.normal(size=s).astype("float32") for s in SHAPES] for _ in range(STEPS)]
    if sparse:  # the first variable's gradient as rows (an embedding's), 2 of its 5 rows touched
        return [
            [tf.IndexedSlices(tf.constant(g[0][[1, 3]]), tf.constant([1, 3]), tf.constant(SHAPES[0]))]
            + [tf.constant(x) for x in g[1:]]
            for g in grads
        ]
    return [[tf.constant(x) for x in g] for g in grads]


def _run(optimizer, gradients, mode="graph"):
    """Applies the gradients step by step to fresh variables; returns (final values, op types of one step)."""
    initial = np.random.default_rng(7)
    variables = [keras.Variable(initial.normal(size=s).astype("float32"), name=f"w{i}") for i, s in enumerate(SHAPES)]
    optimizer.build(variables)

    def step(grads):
        optimizer.apply(grads, variables)

    op_types = set()
    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla", autograph=False)
        op_types = {op.type for op in step.get_concrete_function(gradients[0]).graph.get_operations()}
    for grads in gradients:
        step(grads)
    return [v.numpy() for v in variables], op_types


ADAMW = dict(learning_rate=3e-2, weight_decay=0.1, beta_1=0.8, beta_2=0.95, epsilon=1e-6)
TRANSFORMER_ADAM = dict(learning_rate=1e-2, beta_1=0.9, beta_2=0.98, epsilon=1e-9, clipnorm=1.0)


@pytest.mark.parametrize("mode", ["graph", "eager"])
@pytest.mark.parametrize(
    "reference, fused, settings",
    [
        (keras.optimizers.AdamW, LayerDecayAdamW, ADAMW),
        (keras.optimizers.Adam, FusedAdam, TRANSFORMER_ADAM),
    ],
    ids=["adamw", "adam"],
)
def test_adam_updates_match_keras(reference, fused, settings, mode, rng):
    gradients = _gradients(rng)
    expected, _ = _run(reference(**settings), gradients, mode)
    actual, op_types = _run(fused(**settings), gradients, mode)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7)
    if mode == "graph":
        assert "ResourceApplyAdam" in op_types


def test_adamw_with_lr_multipliers_matches_keras_with_the_scaled_rate(rng):
    gradients = _gradients(rng)
    half_rate = {**ADAMW, "learning_rate": ADAMW["learning_rate"] / 2}
    expected, _ = _run(keras.optimizers.AdamW(**half_rate), gradients)
    actual, _ = _run(LayerDecayAdamW(**ADAMW, lr_multipliers={f"w{i}": 0.5 for i in range(len(SHAPES))}), gradients)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7)


def test_transformer_optimizer_is_a_serializable_fused_adam():
    optimizer = transformer_optimizer(64, warmup_steps=10, clipnorm=1.0)
    assert isinstance(optimizer, FusedAdam) and isinstance(optimizer, keras.optimizers.Adam)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is FusedAdam
    assert (restored.beta_2, restored.epsilon, restored.clipnorm) == (0.98, 1e-9, 1.0)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_sgd_matches_keras(nesterov, rng):
    gradients = _gradients(rng)
    settings = dict(learning_rate=0.1, momentum=0.9, nesterov=nesterov)
    expected, _ = _run(keras.optimizers.SGD(**settings), gradients)
    actual, op_types = _run(LayerDecaySGD(**settings), gradients)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7)
    assert "ResourceApplyKerasMomentum" in op_types


@pytest.mark.parametrize("case", ["xla", "amsgrad", "sparse", "plain_sgd"])
def test_keras_update_where_the_fused_kernel_does_not_apply(case, rng):
    gradients = _gradients(rng, sparse=case == "sparse")
    mode = "xla" if case == "xla" else "graph"
    if case == "plain_sgd":  # no momentum: Keras' single subtraction is already one kernel
        reference, fused, kernel = keras.optimizers.SGD(0.1), LayerDecaySGD(0.1), "ResourceApplyKerasMomentum"
    else:
        settings = {**ADAMW, "amsgrad": case == "amsgrad"}
        reference, fused, kernel = keras.optimizers.AdamW(**settings), LayerDecayAdamW(**settings), "ResourceApplyAdam"
    expected, _ = _run(reference, gradients, mode)
    actual, op_types = _run(fused, gradients, mode)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    if case != "sparse":
        assert kernel not in op_types
    else:  # the dense gradients still take the fused kernel
        assert kernel in op_types


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from keras_vit.training import LayerDecayAdamW

    fused_kernel, traced = tf.raw_ops.ResourceApplyAdam, []
    def counting(**kwargs):
        traced.append(1)
        return fused_kernel(**kwargs)
    tf.raw_ops.ResourceApplyAdam = counting

    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    y = (x.sum(1) > 0).astype("int32")

    def fit(optimizer_class):
        with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                      keras.layers.Dense(2)])
            model.compile(optimizer_class(learning_rate=0.05, weight_decay=0.1),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return [w.tolist() for w in model.get_weights()]

    out = {"keras": fit(keras.optimizers.AdamW)}
    out["untraced"] = not traced
    out["fused"] = fit(LayerDecayAdamW)
    out["traced"] = len(traced)
    print(json.dumps(out))
""")


def test_fused_adamw_under_mirrored_strategy_matches_keras():
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["untraced"] and out["traced"] >= 4  # Keras' AdamW never, ours for each of the 4 variables
    for got, want in zip(out["fused"], out["keras"]):
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)
