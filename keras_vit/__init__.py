"""keras_vit: a Keras 3 model zoo of Vision Transformers and Transformers."""

from keras_vit import layers
from keras_vit.models import (
    DeiT,
    ModelSpec,
    Transformer,
    ViT,
    ViTConfig,
    create_model,
    list_models,
    model_spec,
    register_model,
)
from keras_vit.version import __version__

__all__ = [
    "DeiT",
    "ModelSpec",
    "Transformer",
    "ViT",
    "ViTConfig",
    "__version__",
    "create_model",
    "layers",
    "list_models",
    "model_spec",
    "register_model",
]
