"""The API reference builds with pdoc without a single warning, and the public API answers `help()`."""

import inspect
import os
import subprocess
import sys

import pytest

import keras_vit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "docs", "build_api.py")


@pytest.mark.slow
def test_api_reference_builds_without_warnings_and_documents_every_module(tmp_path):
    out = tmp_path / "api"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, BUILD, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, f"pdoc warned or failed:\n{done.stderr[-6000:]}"
    # every public module has its page (the build follows the package tree, not only `__all__`)
    for name in load_build_api().public_modules():
        page = out.joinpath(*name.split(".")).with_suffix(".html")
        assert page.is_file(), f"no page for {name}"
    vit = (out / "keras_vit" / "models" / "vit.html").read_text()
    assert "forward_intermediates" in vit and "Args" in vit and "Examples" in vit
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".api-")]  # staging folder renamed, none left


def load_build_api():
    sys.path.insert(0, os.path.dirname(BUILD))
    try:
        import build_api
    finally:
        sys.path.pop(0)
    return build_api


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            '"""A module whose __all__ names nothing real."""\n__all__ = ["missing"]\n',
            "Found 'missing' in doc_probe.__all__, but it does not resolve",
        ),
        ('"""A module that fails to import."""\nraise RuntimeError("broken on import")\n', "broken on import"),
    ],
)
def test_a_warning_fails_the_build_and_keeps_the_previous_reference(source, expected, tmp_path, monkeypatch):
    build_api = load_build_api()
    (tmp_path / "doc_probe.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "doc_probe", raising=False)
    out = tmp_path / "api"
    out.mkdir()
    (out / "index.html").write_text("previous build")
    problems = build_api.build(out, modules=["keras_vit.version", "doc_probe"])
    assert any(expected in problem for problem in problems), problems
    assert (out / "index.html").read_text() == "previous build"
    assert sorted(os.listdir(tmp_path)) == ["api", "doc_probe.py"]  # no staging folder left behind


PUBLIC = [name for name in keras_vit.__all__ if not name.startswith("_") and name != "layers"]


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
