"""Layer names that keras_vit 0.1.0 wrote into `.keras` files, kept so that those files still load.

0.1.0 saved its dense and convolution layers as `keras_vit>Dense` and
`keras_vit>Conv2D` (subclasses that only changed how the bias gradient was
summed; that now lives in `keras_vit.layers._fast`). They are Keras' own
layers under the old names: same arguments, weights and config.
"""

import keras

from keras_vit.layers._serializable import serializable


@serializable
class Dense(keras.layers.Dense):
    """`keras.layers.Dense`, under the name 0.1.0 saved it with."""


@serializable
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D`, under the name 0.1.0 saved it with."""
