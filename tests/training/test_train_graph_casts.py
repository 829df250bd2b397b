"""A ViT train step carries no needless `Cast` or `Transpose` op, in float32 or mixed bfloat16.

Needless means: a cast to the dtype a tensor already has, a cast straight back
to the dtype the tensor was cast from, the same tensor cast to the same dtype
twice, any float cast inside the model in float32 training, or two transposes
in a row. What is left is listed in docs/speed.md ("Casts and transposes in
training"): per-weight casts of the bfloat16 policy and their gradients, the
float32 islands (layer-norm statistics, attention logits and softmax), and the
heads-first attention layout.
"""

import collections

import keras
import pytest
import tensorflow as tf

import keras_vit

BATCH, DEPTH = 4, 2


def _train_step_nodes(policy: str) -> list:
    """Every node of one traced train step (the step's graph and the functions it calls)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = keras_vit.ViT(
            image_size=64, patch_size=16, hidden_dim=64, depth=DEPTH, num_heads=2, mlp_dim=128, num_classes=10
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    optimizer = keras.optimizers.AdamW(1e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    graph = step.get_concrete_function(tf.zeros((BATCH, 64, 64, 3)), tf.zeros((BATCH,), tf.int32)).graph
    graph_def = graph.as_graph_def()
    scopes = [list(graph_def.node)] + [list(function.node_def) for function in graph_def.library.function]
    return scopes


def _dtype(node, attr: str) -> str:
    return tf.dtypes.as_dtype(node.attr[attr].type).name


def _needless(scopes: list) -> list[str]:
    problems = []
    for nodes in scopes:
        by_name = {node.name: node for node in nodes}
        seen = collections.Counter()
        for node in nodes:
            if node.op == "Transpose":
                source = by_name.get(node.input[0].split(":")[0])
                if source is not None and source.op == "Transpose":
                    problems.append(f"transpose of a transpose: {node.name}")
            if node.op != "Cast":
                continue
            src, dst = _dtype(node, "SrcT"), _dtype(node, "DstT")
            if src == dst:
                problems.append(f"cast to the same dtype: {node.name}")
            source = by_name.get(node.input[0].split(":")[0])
            if source is not None and source.op == "Cast" and _dtype(source, "SrcT") == dst:
                problems.append(f"cast back to {dst}: {source.name} -> {node.name}")
            seen[(node.input[0], dst)] += 1
        problems += [f"{tensor} cast to {dst} {count} times" for (tensor, dst), count in seen.items() if count > 1]
    return problems


def _float_casts_in_model(scopes: list) -> list[str]:
    floats = ("float16", "bfloat16", "float32", "float64")
    return [
        node.name
        for nodes in scopes
        for node in nodes
        if node.op == "Cast"
        and _dtype(node, "SrcT") in floats
        and _dtype(node, "DstT") in floats
        and ("vit" in node.name.split("/")[0] or node.name.startswith("gradient_tape/vit"))
    ]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_no_needless_casts_or_transposes(policy):
    assert _needless(_train_step_nodes(policy)) == []


def test_float32_model_has_no_float_casts():
    assert _float_casts_in_model(_train_step_nodes("float32")) == []


def test_bfloat16_casts_are_the_documented_ones():
    """Per block: 8 weight casts (qkv, proj, fc1, fc2 kernels and biases), the 2 layer-norm inputs and their 2
    incoming gradients (statistics in float32), and the query, key and softmax weights of the float32 logits."""
    casts = _float_casts_in_model(_train_step_nodes("mixed_bfloat16"))
    per_block = collections.Counter(name.split("/")[1] for name in casts if name.split("/")[1].startswith("block_"))
    assert len(per_block) == DEPTH
    assert all(count == 8 + 2 + 2 + 3 for count in per_block.values()), per_block
