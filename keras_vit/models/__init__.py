"""Models of the zoo and the registry that names them."""

from keras_vit.models import variants as _variants  # noqa: F401  (registers the zoo)
from keras_vit.models.beit import BEiT, BEiTConfig
from keras_vit.models.mae import MAE
from keras_vit.models.registry import ModelSpec, create_model, list_models, model_spec, register_model
from keras_vit.models.transformer import Transformer, TransformerConfig
from keras_vit.models.vit import DeiT, ViT, ViTConfig, inference_copy

__all__ = [
    "BEiT",
    "BEiTConfig",
    "MAE",
    "DeiT",
    "ModelSpec",
    "Transformer",
    "TransformerConfig",
    "ViT",
    "ViTConfig",
    "create_model",
    "inference_copy",
    "list_models",
    "model_spec",
    "register_model",
]
