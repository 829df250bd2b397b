"""Test set-up shared by every test process.

torch (with `torch._dynamo`, which timm imports) must be imported before
TensorFlow: the other order crashes the interpreter with TF 2.21 + torch 2.14.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # before TensorFlow, see above
import torch._dynamo  # noqa: F401

# isort: split
import keras
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from float32 and a known seed, whatever the test before it set."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
