"""keras_vit: a Keras 3 model zoo of Vision Transformers and Transformers."""

from keras_vit import layers
from keras_vit.models import (
    MAE,
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

# Registers the optimizers, schedules and sequence losses/metrics that saved
# runs reference, so `keras.saving.load_model("runs/<run>/model.keras")` works
# after a plain `import keras_vit`.
from keras_vit.training import optimizers as _optimizers  # noqa: F401
from keras_vit.training import schedules as _schedules  # noqa: F401
from keras_vit.training import sequence as _sequence  # noqa: F401
from keras_vit.version import __version__

__all__ = [
    "DeiT",
    "MAE",
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
