"""Adam and momentum-SGD updates as TensorFlow's fused training kernels: one op per variable.

Keras 3 writes each optimizer's update in `keras.ops`. On TensorFlow's graph
executor, Adam's update is a dozen kernels per variable (each one pass over
memory and one scheduling step) plus scalar work for the bias corrections:
9.5% of a ViT-Ti/16 train step at batch 8 (`benchmarks.op_profile`).
TensorFlow's `ResourceApplyAdam` and `ResourceApplyKerasMomentum` (the
kernels tf.keras' optimizers called) compute the same formulas in one
multi-threaded kernel each:

    Adam:  m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2);
           w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
    SGD:   a = momentum a - lr g;  w += a  (Nesterov: w += momentum a - lr g)

Keras' decoupled weight decay still runs first, unchanged. The fused kernels
replace Keras' update only on TensorFlow's op-by-op executor
(`keras_vit.layers._fast.tensorflow_op_by_op`) for dense gradients; XLA
fuses Keras' own ops, other backends keep them, and AMSGrad and sparse
(`IndexedSlices`) gradients take Keras' path.
"""

from __future__ import annotations

import keras

from keras_vit.layers._fast import tensorflow_op_by_op


def _fused_kernels_apply(gradient) -> bool:
    """True when tracing for TensorFlow's executor with a dense gradient."""
    if not tensorflow_op_by_op():
        return False
    import tensorflow as tf

    return isinstance(gradient, tf.Tensor)


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (the local copy inside a strategy's update)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


class FusedAdamUpdate:
    """Mixin for `keras.optimizers.Adam` / `AdamW`: the update as one `ResourceApplyAdam` per variable."""

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or not _fused_kernels_apply(gradient):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        return tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


class FusedSGDUpdate:
    """Mixin for `keras.optimizers.SGD`: with momentum, the update as one `ResourceApplyKerasMomentum`."""

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum == 0 or not _fused_kernels_apply(gradient):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        return tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable),
            accum=_handle(self.momentums[self._get_variable_index(variable)]),
            lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype),
            use_nesterov=bool(self.nesterov),
        )
