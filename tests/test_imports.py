"""No two modules of keras_vit import each other, directly or through others (DESIGN.md).

The import graph is read from the source with `ast`, so imports inside functions
count as much as those at the top of a module: a lazy import still ties the two
modules together. An edge goes to the module an import statement names
(`from keras_vit.a import b` names `keras_vit.a.b` when that is a module, else
`keras_vit.a`); the parent packages Python initialises on the way are not edges.
"""

import ast
import pathlib

import pytest

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / "keras_vit"  # read as source, never imported


def module_files(package_dir: pathlib.Path = PACKAGE_DIR) -> dict[str, pathlib.Path]:
    """Dotted module name -> source file, for every module of the package."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> dict[str, int]:
    """The package modules that `name` imports anywhere in its source -> line of the first such import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: climb from the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target in modules and target != name:
                found.setdefault(target, node.lineno)
    return found


def import_graph(modules: dict[str, pathlib.Path]) -> dict[str, dict[str, int]]:
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle through each module on a cycle not already reported, each as [a, b, ..., a]."""
    cycles, seen = [], set()
    for start in sorted(graph):
        if start in seen:
            continue
        # Breadth-first from `start`: the shortest way back to it, if any.
        parents, frontier, back = {start: None}, [start], None
        while frontier and back is None:
            next_frontier = []
            for node in frontier:
                if start in graph[node]:
                    back = node
                    break
                for target in sorted(graph[node]):
                    if target not in parents:
                        parents[target] = node
                        next_frontier.append(target)
            frontier = next_frontier
        if back is None:
            continue
        path = [back]
        while path[-1] != start:
            path.append(parents[path[-1]])
        cycle = [*reversed(path), start]
        seen.update(cycle)
        cycles.append(cycle)
    return cycles


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_no_import_cycles():
    modules = module_files()
    assert len(modules) > 100, f"Expected keras_vit's modules under {PACKAGE_DIR}; found {sorted(modules)}"
    graph = import_graph(modules)
    cycles = find_cycles(graph)
    assert not cycles, "Modules that import each other:\n" + "\n".join(describe(c, graph) for c in cycles)


@pytest.mark.parametrize(
    "sources, expected",
    [
        # a function-level import closes the loop as much as a top-level one
        (
            {"a": "from pkg import b\n", "b": "def f():\n    from pkg.c import g\n", "c": "import pkg.a\n"},
            ["a", "b", "c"],
        ),
        # relative imports resolve against the importing module's package
        ({"a": "from . import b\n", "b": "from .a import x\n"}, ["a", "b"]),
        ({"a": "from pkg import b\n", "b": "import numpy\n"}, None),
    ],
)
def test_cycle_finder_on_small_packages(tmp_path, sources, expected):
    package_dir = tmp_path / "pkg"
    package_dir.mkdir()
    (package_dir / "__init__.py").write_text("")
    for module, source in sources.items():
        (package_dir / f"{module}.py").write_text(source)
    graph = import_graph(module_files(package_dir))
    cycles = find_cycles(graph)
    if expected is None:
        assert cycles == []
    else:
        assert cycles == [[f"pkg.{m}" for m in [*expected, expected[0]]]]
        assert describe(cycles[0], graph).startswith("pkg.a (line 1) -> pkg.b (line ")
