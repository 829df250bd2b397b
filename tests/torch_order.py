"""Which test files need torch: read from their imports with `ast`, without importing anything.

A file needs torch when it (or a first-party module it imports, followed recursively)
imports torch, timm, torchvision, transformers or safetensors.torch anywhere, at the
top or inside a function. tests/conftest.py uses this to import torch before
TensorFlow only in a test process that will import such a file.
"""

from __future__ import annotations

import ast
import functools
import pathlib
from collections.abc import Iterable

TORCH_MODULES = ("torch", "timm", "torchvision", "transformers", "safetensors.torch")


def _is_torch_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in TORCH_MODULES)


@functools.cache
def _imported_names(path: pathlib.Path) -> tuple[str, ...]:
    names = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return tuple(names)


def _module_file(name: str, root: pathlib.Path) -> pathlib.Path | None:
    """The source file of a first-party module under `root` (e.g. tests.parity.vit_parity_utils), if any."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def file_needs_torch(path: pathlib.Path, root: pathlib.Path) -> bool:
    """Whether importing `path` imports a torch library, directly or through first-party modules under `root`."""
    seen, pending = set(), [path.resolve()]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in _imported_names(current):
            if _is_torch_module(name):
                return True
            module = _module_file(name, root)
            if module is not None:
                pending.append(module.resolve())
    return False


def collected_files(args: Iterable[str], invocation_dir: pathlib.Path) -> list[pathlib.Path]:
    """The .py files pytest may import for these command-line paths (node ids' `::` parts dropped)."""
    files = []
    for arg in args:
        path = invocation_dir / arg.split("::", 1)[0]
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.suffix == ".py" and path.is_file():
            files.append(path)
    return files


def torch_needed(args: Iterable[str], invocation_dir: pathlib.Path, root: pathlib.Path) -> list[pathlib.Path]:
    """The files among those collected for `args` that need torch (empty: this process never imports it)."""
    return [path for path in collected_files(args, invocation_dir) if file_needs_torch(path, root.resolve())]
