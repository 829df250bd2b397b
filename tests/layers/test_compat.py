"""`.keras` files of keras_vit 0.1.0 name its dense layers `keras_vit>Dense`; they still deserialize."""

import keras
import numpy as np

import keras_vit  # noqa: F401  (registers the layer names)


def test_0_1_0_dense_and_conv_names_deserialize_to_keras_layers():
    for class_name, config, shape in (
        ("Dense", {"units": 3, "name": "pre_logits"}, (2, 5)),
        ("Conv2D", {"filters": 2, "kernel_size": 2, "strides": 2, "name": "proj"}, (1, 4, 4, 3)),
    ):
        layer = keras.saving.deserialize_keras_object(
            {
                "module": "keras_vit.layers.bias",
                "class_name": class_name,
                "config": config,
                "registered_name": f"keras_vit>{class_name}",
            }
        )
        assert isinstance(layer, getattr(keras.layers, class_name))
        assert layer(np.zeros(shape, "float32")).shape[-1] == config.get("units", config.get("filters"))
