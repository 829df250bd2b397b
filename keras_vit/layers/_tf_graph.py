"""Where a layer is being traced: for TensorFlow's op-by-op graph executor, or elsewhere."""

from __future__ import annotations

import keras


def tensorflow_op_by_op() -> bool:
    """True when tracing for TensorFlow's graph executor, which runs every op as its own kernel.

    False on other backends and inside XLA clusters (`jit_compile=True`),
    which fuse the autodiff backward themselves: the hand-written backward
    passes (`keras_vit.layers.normalization`, `.dot_product_attention`) are
    used only where this is True (and the XLA-compiled elementwise kernels of
    `keras_vit.layers.xla_elementwise` only there). TensorFlow has no public test for XLA
    context; should its internal one move, autodiff (always correct) is used.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    try:
        from tensorflow.python.framework import ops as tf_ops
        from tensorflow.python.ops import control_flow_util

        return not control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())
    except (ImportError, AttributeError):
        return False


def backward_scope() -> str:
    """`<current name scope>/backward/`, so that profiles attribute a hand-written backward to its layer."""
    import tensorflow as tf

    return f"{tf.get_current_name_scope()}/backward/".lstrip("/")


def gradient_recorded() -> bool:
    """True while a `tf.GradientTape` records (the forward of a `fit` train step), False under `predict`.

    Lets a layer pick a train-time kernel without a `training` argument; False
    wherever TensorFlow's internal test is missing (the inference path is always correct).
    """
    try:
        from tensorflow.python.eager import record

        return bool(record.could_possibly_record())
    except (ImportError, AttributeError):
        return False


def tensorflow_train_graph() -> bool:
    """True while tracing a train step's forward for TensorFlow's op-by-op executor.

    Where the XLA-compiled kernels of `keras_vit.layers.xla_elementwise` are
    used: inference, exports and XLA clusters keep plain ops.
    """
    return tensorflow_op_by_op() and gradient_recorded()
