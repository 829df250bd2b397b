"""Small models shared by the visualization tests (built once per module: the suite must stay fast)."""

import numpy as np
import pytest


def _randomize(model, seed=1):
    """Random values in every variable (LayerNorm, biases, tokens included) so no test leans on init values."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        scale = 0.3 if len(shape) >= 2 else 0.2
        value = rng.normal(0.0, scale, shape)
        if variable.path.endswith("gamma"):
            value = 1.0 + value
        variable.assign(value.astype("float32"))
    return model


@pytest.fixture(scope="module")
def deit_registers():
    """A distilled DeiT with 2 register tokens on a non-square 16x24 input (4x6 grid)."""
    import keras  # in the fixture: conftests import no TensorFlow (see tests/conftest.py)

    import keras_vit

    keras.utils.set_random_seed(3)
    model = keras_vit.DeiT(
        image_size=(16, 24),
        patch_size=4,
        hidden_dim=32,
        depth=2,
        num_heads=2,
        mlp_dim=48,
        num_register_tokens=2,
        num_classes=3,
    )
    return _randomize(model)


@pytest.fixture
def randomize():
    return _randomize


@pytest.fixture(scope="module")
def images_16x24():
    return np.random.default_rng(7).normal(size=(2, 16, 24, 3)).astype("float32")
