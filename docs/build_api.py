"""Builds the keras_vit API reference (HTML, one page per module) with pdoc into docs/api/.

    pip install -e ".[docs]"        # pdoc
    python docs/build_api.py        # -> docs/api/index.html (open it in a browser)
    python docs/build_api.py --output /tmp/api

Docstrings are read as Google style (`Args:`, `Returns:`, `Examples:`). Any
warning pdoc emits (a module that fails to import, an unreadable signature or
annotation, a bad `__all__` entry) fails the build with exit status 1 and
leaves the previous output untouched; otherwise the new pages replace the old
folder in one rename, so a reader never sees a half-written reference.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import pkgutil
import shutil
import sys
import tempfile
import warnings

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "api"


def public_modules(package: str = "keras_vit") -> list[str]:
    """`package` and every submodule below it whose name has no leading underscore, sorted.

    pdoc alone follows a package's `__all__`, which names the API, not every
    module; the reference lists them all (layers, weights, training, ...).
    """

    def fail(name: str) -> None:
        raise  # noqa: PLE0704 (re-raises the import error of subpackage `name` instead of skipping it)

    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.", onerror=fail):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def pdoc_specs(names: list[str]) -> list[str]:
    """The fewest of `names` to hand pdoc so that each module is documented exactly once.

    pdoc also walks into the submodules a package names in `__all__` (e.g.
    `keras_vit.layers`); passing such a module again makes pdoc warn about a
    repeated module, so modules already reached from an earlier spec are left out.
    """
    from pdoc.extract import walk_packages2

    covered: set[str] = set()
    specs = []
    for name in sorted(names):
        if name in covered:
            continue
        is_package = hasattr(importlib.import_module(name), "__path__")
        specs.append(name)
        covered.update(m.name for m in walk_packages2([pkgutil.ModuleInfo(None, name, is_package)]))
    return specs


def resolve_lazy_exports(names: list[str]) -> None:
    """Imports the names a module exports through a module-level `__getattr__` (e.g. `export.ModelServer`).

    Such names are absent from the module's `__dict__`, so pdoc cannot find
    them; the docs environment has every optional dependency, so they are
    resolved once here and documented where the user imports them from.
    """
    for name in names:
        module = importlib.import_module(name)
        if not hasattr(module, "__getattr__"):
            continue
        for exported in getattr(module, "__all__", ()):
            if exported not in vars(module):
                setattr(module, exported, getattr(module, exported))


def build(output: str | os.PathLike = DEFAULT_OUTPUT, modules: list[str] | None = None) -> list[str]:
    """Renders the reference of `modules` into `output`.

    Args:
        output: folder to (re)place; its parent must be writable.
        modules: importable module names to document; None: `public_modules()`.

    Returns:
        The warnings pdoc emitted, as strings; when there are any, `output`
        is left as it was.
    """
    # h5py calls platform.processor() (`uname -p`) when imported; pdoc blocks and warns about
    # subprocesses at import time unless told that the documented code may run them.
    os.environ.setdefault("PDOC_ALLOW_EXEC", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import pdoc
    import pdoc.render

    from keras_vit.version import __version__

    output = pathlib.Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    pdoc.render.configure(docformat="google", footer_text=f"keras_vit {__version__}", show_source=True, search=True)
    names = modules or public_modules()
    problems = []
    for name in names:  # every module that fails to import, not only the first
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 (any import failure is a build failure)
            problems.append(f"{type(error).__name__}: {name} does not import: {error}")
    if problems:
        return problems
    resolve_lazy_exports(names)
    specs = pdoc_specs(names)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        # Everything is imported already, so what is caught here is what pdoc itself reports.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pdoc.pdoc(*specs, output_directory=staging)
        problems = [f"{w.category.__name__}: {w.message}" for w in caught]
        if problems:
            return problems
        retired = None
        if output.exists():
            retired = output.parent / f".{output.name}-old-{os.getpid()}"
            os.replace(output, retired)
        os.replace(staging, output)
        if retired is not None:
            shutil.rmtree(retired)
        return []
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="folder for the HTML (default: docs/api)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # document this checkout, installed or not
    problems = build(args.output)
    if problems:
        print(f"pdoc emitted {len(problems)} warning(s); {args.output} was not changed:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    pages = sum(1 for _ in pathlib.Path(args.output).rglob("*.html"))
    print(f"API reference: {pages} pages in {args.output} (open {os.path.join(args.output, 'index.html')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
