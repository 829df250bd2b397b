"""A ViT's float32 forward in the fewest stock TensorFlow ops: how close to its matmuls such a graph gets.

A measuring device, not a model to serve. From a built keras_vit `ViT` it
takes the weights once and folds, outside the timed call, everything that can
be folded: each layer norm's scale and shift into the matmul that follows it
(`(xhat * gamma + beta) W + b = xhat (gamma W) + (beta W + b)`) and the
attention's `1 / sqrt(head_dim)` into the query columns. The residual stream
stays `(batch * tokens, dim)`, so that TensorFlow's rewriter fuses bias,
exact GELU and the residual adds into the matmuls. What the call still runs
besides the matrix products is what no stock kernel fuses into them: each
layer norm's row statistics and normalisation, softmax, and the head split
and merge transposes. Same logits as the model (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

SUPPORTED = dict(
    class_token=True,
    distillation_token=False,
    num_register_tokens=0,
    pooling="token",
    qk_norm=False,
    layer_scale_init=None,
    fc_norm=None,
    representation_size=None,
    position_embedding="learned",
    pos_embed_prefix=True,
)


def _folded(gamma: np.ndarray, beta: np.ndarray, kernel: np.ndarray, bias: np.ndarray):
    """(gamma W, beta W + b): a layer norm's affine moved into the next dense layer."""
    return gamma[:, None] * kernel, beta @ kernel + bias


def lean_forward(model) -> Callable:
    """A `tf.function(images) -> logits` computing `model`'s float32 forward with its layer-norm affines
    and query scale folded into the weights (see the module docstring).

    Raises:
        ValueError: for architectures outside the plain class-token ViT it covers (`SUPPORTED`).
    """
    import tensorflow as tf

    from keras_vit.layers.normalization import layer_norm_last_axis

    config = model.get_config()
    unsupported = {key: config.get(key) for key, value in SUPPORTED.items() if config.get(key, value) != value}
    if unsupported:
        raise ValueError(f"lean_forward covers the plain class-token ViT only; this model has {unsupported}.")
    weights = {v.path: np.asarray(v.numpy(), "float64") for v in model.weights}
    dim, heads, epsilon = config["hidden_dim"], config["num_heads"], config["layer_norm_epsilon"]
    patch = config["patch_size"]
    strides = (patch, patch) if isinstance(patch, int) else tuple(patch)

    def constant(value):
        return tf.constant(np.asarray(value, "float32"))

    blocks = []
    for index in range(config["depth"]):
        name = f"block_{index}"

        def get(suffix, name=name):
            return weights[f"{name}/{suffix}"]

        no_bias = np.zeros(3 * dim)  # qkv_bias=False
        qkv, qkv_bias = _folded(
            get("norm1/gamma"), get("norm1/beta"), get("attn/qkv/kernel"), weights.get(f"{name}/attn/qkv/bias", no_bias)
        )
        scale = 1.0 / math.sqrt(dim // heads)
        qkv[:, :dim] *= scale  # the query columns come first in the (3, heads, head_dim) layout
        qkv_bias[:dim] *= scale
        fc1, fc1_bias = _folded(get("norm2/gamma"), get("norm2/beta"), get("mlp/fc1/kernel"), get("mlp/fc1/bias"))
        blocks.append(
            [
                constant(w)
                for w in (
                    qkv,
                    qkv_bias,
                    get("attn/proj/kernel"),
                    get("attn/proj/bias"),
                    fc1,
                    fc1_bias,
                    get("mlp/fc2/kernel"),
                    get("mlp/fc2/bias"),
                )
            ]
        )
    head, head_bias = map(
        constant, _folded(weights["norm/gamma"], weights["norm/beta"], weights["head/kernel"], weights["head/bias"])
    )
    patch_kernel = constant(weights["patch_embed/projection/kernel"])
    patch_bias = constant(weights["patch_embed/projection/bias"])
    prefix, position = constant(weights["prefix_tokens/cls_token"]), constant(weights["pos_embed/embeddings"])

    def normalize(x):  # the model's own layer norm, its affine folded away
        return layer_norm_last_axis(x, epsilon=epsilon)

    def dense(x, kernel, bias):
        return tf.nn.bias_add(tf.matmul(x, kernel), bias)

    @tf.function(autograph=False)
    def forward(images):
        batch = tf.shape(images)[0]
        patches = tf.nn.bias_add(tf.nn.conv2d(images, patch_kernel, strides, "VALID"), patch_bias)
        tokens = tf.concat([tf.tile(prefix, (batch, 1, 1)), tf.reshape(patches, (batch, -1, dim))], 1) + position
        length = tf.shape(tokens)[1]
        x = tf.reshape(tokens, (-1, dim))
        for qkv, qkv_bias, proj, proj_bias, fc1, fc1_bias, fc2, fc2_bias in blocks:
            qkv_heads = tf.reshape(dense(normalize(x), qkv, qkv_bias), (batch, length, 3, heads, dim // heads))
            query, key, value = tf.unstack(tf.transpose(qkv_heads, (2, 0, 3, 1, 4)))
            mixed = tf.matmul(tf.nn.softmax(tf.matmul(query, key, transpose_b=True)), value)
            x = x + dense(tf.reshape(tf.transpose(mixed, (0, 2, 1, 3)), (-1, dim)), proj, proj_bias)
            x = x + dense(tf.nn.gelu(dense(normalize(x), fc1, fc1_bias), approximate=False), fc2, fc2_bias)
        return dense(normalize(tf.reshape(x, (batch, length, dim))[:, 0]), head, head_bias)

    return forward
