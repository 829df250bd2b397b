"""Where a layer is being traced: for TensorFlow's op-by-op graph executor, or elsewhere."""

from __future__ import annotations

import keras


def tensorflow_op_by_op() -> bool:
    """True when tracing for TensorFlow's graph executor, which runs every op as its own kernel.

    False on other backends and inside XLA clusters (`jit_compile=True`),
    which fuse the autodiff backward themselves: the hand-written backward
    passes (`keras_vit.layers.normalization`, `.dot_product_attention`) are
    used only where this is True. TensorFlow has no public test for XLA
    context; should its internal one move, autodiff (always correct) is used.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    try:
        from tensorflow.python.framework import ops as tf_ops  # noqa: PLC0415
        from tensorflow.python.ops import control_flow_util  # noqa: PLC0415

        return not control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())
    except (ImportError, AttributeError):
        return False


def backward_scope() -> str:
    """`<current name scope>/backward/`, so that profiles attribute a hand-written backward to its layer."""
    import tensorflow as tf  # noqa: PLC0415 (only reached on the TensorFlow backend)

    return f"{tf.get_current_name_scope()}/backward/".lstrip("/")
