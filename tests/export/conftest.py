"""Tiny models with real (random, non-zero) heads, exported once per test process."""

import pytest


@pytest.fixture(scope="session")
def vit():
    from tests.export.export_helpers import tiny_model  # conftests import no TensorFlow (see tests/conftest.py)

    return tiny_model()


@pytest.fixture(scope="session")
def vit_export(vit, tmp_path_factory):
    """Version folder of the tiny ViT exported as <tmp>/tiny_vit/1."""
    from keras_vit import export
    from tests.export.export_helpers import EXPORT_ARGS

    base = tmp_path_factory.mktemp("saved_models") / "tiny_vit"
    return export.saved_model(vit, str(base / "1"), **EXPORT_ARGS)


@pytest.fixture(scope="session")
def deit():
    from tests.export.export_helpers import tiny_model

    return tiny_model(distilled=True)


@pytest.fixture(scope="session")
def deit_export(deit, tmp_path_factory):
    """Version folder of the tiny distilled DeiT, exported with --verify."""
    from keras_vit import export
    from tests.export.export_helpers import EXPORT_ARGS

    base = tmp_path_factory.mktemp("saved_models") / "tiny_deit"
    return export.saved_model(deit, str(base / "1"), verify=True, **EXPORT_ARGS)
