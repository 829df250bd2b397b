"""keras_vit: a Keras 3 model zoo of Vision Transformers and Transformers."""

import importlib

from keras_vit import _cli_startup

if _cli_startup.is_command_process():  # quiet TensorFlow's start-up before keras imports it
    _cli_startup.filter_startup_lines()

# isort: split
from keras_vit import layers, models
from keras_vit.models import (
    MAE,
    BEiT,
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
from keras_vit.models.eva import EVA

# Registers the optimizers, schedules and sequence losses/metrics that saved runs reference, so
# `keras.saving.load_model("runs/<run>/model.keras")` works after a plain `import keras_vit`. Keras looks
# serializable names up in its global registry and has no lazy hook, so these must be imported here; they
# import only keras (about 6 ms on top of keras' own import).
from keras_vit.training import optimizers as _optimizers  # noqa: F401
from keras_vit.training import schedules as _schedules  # noqa: F401
from keras_vit.training import sequence as _sequence  # noqa: F401
from keras_vit.version import __version__

# Subpackages reached as attributes (`keras_vit.export.saved_model(...)`), imported on first use so that
# `import keras_vit` does not pay for matplotlib, tf.data pipelines or the serving stack.
_LAZY_SUBPACKAGES = ("data", "export", "recipes", "training", "visualize", "weights")

__all__ = [
    "BEiT",
    "DeiT",
    "EVA",
    "MAE",
    "ModelSpec",
    "Transformer",
    "ViT",
    "ViTConfig",
    "__version__",
    "create_model",
    "data",
    "export",
    "layers",
    "list_models",
    "model_spec",
    "models",
    "recipes",
    "register_model",
    "training",
    "visualize",
    "weights",
]


def __getattr__(name: str):
    """PEP 562: imports a subpackage the first time it is used as an attribute."""
    if name in _LAZY_SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
