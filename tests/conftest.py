"""Test set-up shared by every test process.

torch first, and only where needed. With TF 2.21 + torch 2.14 in one process,
importing TensorFlow and then torch (`torch._dynamo`, which timm imports) crashes
the interpreter. Test modules are imported at collection, in path order (under
`pytest -n 2` each worker collects every test given), so a layer test that
imports keras_vit may well be imported before a parity test that imports timm.

Decision: at `pytest_configure`, before any test module is imported, this file
reads the imports (with `ast`, see tests/torch_order.py) of every file the
process will collect. If one of them needs torch, timm, torchvision or
transformers, torch and `torch._dynamo` are imported right then, before
TensorFlow; otherwise torch is never imported, so tests that do not need it run
where torch is not installed. The xdist controller collects nothing and imports
neither. Hence two rules for test code:
- a test that needs torch imports it (or a first-party helper module that does) with
  an import statement anywhere in its file, so the scan sees it;
- no conftest.py imports TensorFlow, Keras or keras_vit at module level (fixtures
  do): the conftests of the folders named on the command line are imported before
  `pytest_configure` (tests/test_imports_torch.py checks this). If one did and the
  same call needed torch, the run stops with a UsageError instead of crashing.
"""

import os
import pathlib
import sys

import numpy as np
import pytest

from tests.torch_order import torch_needed

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _is_xdist_controller(config: pytest.Config) -> bool:
    return getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _is_xdist_controller(config):
        return
    needing = torch_needed(config.args, config.invocation_params.dir, ROOT)
    if not needing:
        return
    if "tensorflow" in sys.modules:
        raise pytest.UsageError(
            f"TensorFlow was imported before torch, which {needing[0]} needs; importing torch now would crash "
            "the interpreter. Move the TensorFlow/Keras/keras_vit imports of the conftest.py files on the way "
            "into their fixtures, or run the torch tests in a separate pytest call."
        )
    import torch._dynamo  # noqa: F401  (imports torch too; before TensorFlow, see above)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from float32 and a known seed, whatever the test before it set."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
