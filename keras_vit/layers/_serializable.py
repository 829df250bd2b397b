"""One decorator so every layer registers under the same package name."""

import keras

serializable = keras.saving.register_keras_serializable(package="keras_vit")
