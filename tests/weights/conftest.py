"""Fixtures of the weights tests: tiny keras_vit models with random (non-trivial) weights."""

import numpy as np
import pytest

TINY = dict(image_size=16, patch_size=8, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=3)


def randomize(model, seed: int = 0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign((0.1 * rng.standard_normal(variable.shape)).astype(variable.dtype))
    return model


def snapshot(model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.weights]


@pytest.fixture
def tiny():
    """Builds a tiny ViT (TINY overridden by keyword arguments) with random weights."""

    import keras_vit  # in the fixture: conftests import no TensorFlow (see tests/conftest.py)

    def build(seed: int = 0, **overrides):
        return randomize(keras_vit.ViT(**dict(TINY, **overrides)), seed)

    return build


@pytest.fixture
def batch():
    return np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32")
