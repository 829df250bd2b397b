"""`Dense` and `Conv2D` whose bias gradient is summed in float32 when training in 16 bits.

Keras' TensorFlow backend turns `x + bias` into a `BiasAdd` op, whose CPU
gradient kernel (`BiasAddGrad`) accumulates bfloat16 in bfloat16: over the 8320
token rows of the CIFAR recipe's batch of 128, sums of unit-normal gradients
(of order +-90) came out 30-50 off, and in the CIFAR model under mixed
bfloat16 the value biases' gradients were 59-63% off the float32 ones
(relative norm), the other biases' 4-5% (tensorflow/tensorflow#86378 reports
the kernel disagreeing with the GPU). In 16-bit training these layers add the
bias as `bias + x`, which Keras keeps a broadcasting add: its gradient is a
`Sum`, accumulated in float32, and grappler still fuses the add into the
matmul (the bf16 CIFAR train step ran 1.03x faster; README, Benchmarks).
Inference and float32 keep `BiasAdd`, which oneDNN fuses into the matmul
together with the GELU.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers._serializable import serializable


def _adds_bias_first(layer, training) -> bool:
    """True where the bias goes in as `bias + x`: training with a bias in a 16-bit compute dtype."""
    return bool(training) and layer.bias is not None and layer.compute_dtype in ("bfloat16", "float16")


@serializable
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` whose bias gradient is accurate in 16-bit training (see module docstring).

    Same arguments, weights and config as the Keras layer.
    """

    def call(self, inputs, training=None):
        if not _adds_bias_first(self, training):
            return super().call(inputs, training=training)
        outputs = ops.add(self.bias, ops.matmul(inputs, self.kernel))  # Keras maps `x + bias` to BiasAdd
        return outputs if self.activation is None else self.activation(outputs)


@serializable
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (channels last) whose bias gradient is accurate in 16-bit training.

    Same arguments, weights and config as the Keras layer.
    """

    def call(self, inputs, training=None):
        if not _adds_bias_first(self, training) or self.data_format != "channels_last":
            return super().call(inputs)
        outputs = ops.add(self.bias, self.convolution_op(inputs, self.kernel))  # as in `Dense`
        return outputs if self.activation is None else self.activation(outputs)
