"""The public API answers `help()`: every name has a summary, its sections and examples that run.

The rendered reference (mkdocstrings) is built by tests/docs/test_site.py."""

import inspect

import pytest

import keras_vit

# Functions and classes; the subpackages (`keras_vit.export`, ...) are modules with a summary docstring.
PUBLIC = [n for n in keras_vit.__all__ if not n.startswith("_") and not inspect.ismodule(getattr(keras_vit, n))]
SUBPACKAGES = [name for name in keras_vit.__all__ if inspect.ismodule(getattr(keras_vit, name))]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackages_have_a_summary(name):
    doc = inspect.getdoc(getattr(keras_vit, name)) or ""
    assert doc and doc.splitlines()[0].strip(), f"keras_vit.{name} has no one-line summary"


@pytest.mark.parametrize("name", PUBLIC)
def test_public_api_docstrings_have_args_returns_and_an_example(name):
    obj = getattr(keras_vit, name)
    doc = inspect.getdoc(obj) or ""
    assert doc and doc.splitlines()[0].strip(), f"keras_vit.{name} has no one-line summary"
    sections = {"Args:", "Examples:"} if inspect.isclass(obj) else {"Args:", "Returns:", "Examples:"}
    if inspect.isclass(obj) and "Attributes:" in doc:  # dataclasses document fields, not arguments
        sections = {"Attributes:", "Examples:"}
    missing = sorted(s for s in sections if s not in doc)
    assert not missing, f"keras_vit.{name}'s docstring lacks {missing}"
    for line in doc.split("Examples:", 1)[1].splitlines():
        if line.strip().startswith(">>>"):
            break
    else:
        pytest.fail(f"keras_vit.{name}'s Examples: section has no `>>>` line")


def test_help_of_vit_names_every_architecture_argument():
    doc = inspect.getdoc(keras_vit.ViT)
    for field in keras_vit.ViTConfig.__dataclass_fields__:
        assert f"{field}:" in doc, f"help(keras_vit.ViT) does not describe `{field}`"
    assert "weights:" in doc


@pytest.mark.parametrize(
    "name", ["ModelSpec", "ViTConfig", "create_model", "list_models", "model_spec", "register_model"]
)
def test_docstring_examples_print_what_they_claim(name, monkeypatch):
    import doctest

    import numpy as np

    from keras_vit.models import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # register_model's example registers
    obj = getattr(keras_vit, name)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={"keras_vit": keras_vit, "np": np})
    assert tests and tests[0].examples, f"keras_vit.{name} has no doctest examples"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
