"""torch is imported only by test processes that need it, and then before TensorFlow (see tests/conftest.py)."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

from tests.torch_order import file_needs_torch, torch_needed

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _write(root: pathlib.Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


def test_scan_follows_function_level_imports_and_first_party_helpers(tmp_path):
    _write(
        tmp_path,
        {
            "t/__init__.py": "",
            "t/helper.py": "def reference():\n    import timm\n",
            "t/test_parity.py": "from t.helper import reference\n",
            "t/test_lazy.py": "def test_x():\n    from safetensors.torch import save_file\n",
            "t/test_layer.py": "import keras\nimport numpy as np\nfrom t import other\n",
            "t/other.py": "from t import test_layer\n",  # a cycle the scan must not loop on
        },
    )
    needing = torch_needed(["t"], tmp_path, tmp_path)
    assert [p.name for p in needing] == ["helper.py", "test_lazy.py", "test_parity.py"]
    assert not file_needs_torch(tmp_path / "t/test_layer.py", tmp_path)
    assert torch_needed(["t/test_layer.py::test_x"], tmp_path, tmp_path) == []


def test_this_repository_layer_tests_split_as_expected():
    assert torch_needed(["tests/layers/test_bias.py", "tests/test_validation.py"], ROOT, ROOT) == []
    assert torch_needed(["tests/parity/test_timm_parity.py"], ROOT, ROOT)


def test_no_conftest_imports_tensorflow_at_module_level():
    """Conftests of folders named on the command line load before the torch decision (tests/conftest.py)."""
    heavy = ("tensorflow", "keras", "keras_vit", "jax", "tests.")
    offenders = []
    for path in sorted((ROOT / "tests").rglob("conftest.py")):
        for node in ast.parse(path.read_text()).body:  # module level only; fixtures may import anything
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.startswith(heavy) and name != "tests.torch_order":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not offenders, offenders


def _pytest(args: list[str], extra_path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, str(ROOT)) if p)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # a pytest subprocess that imports TensorFlow
def test_layer_tests_run_where_torch_cannot_be_imported(tmp_path):
    _write(tmp_path, {"torch/__init__.py": "raise ImportError('torch is blocked for this test run')\n"})
    blocked = subprocess.run(
        [sys.executable, "-c", "import torch"], env={"PYTHONPATH": str(tmp_path)}, capture_output=True, text=True
    )
    assert "torch is blocked" in blocked.stderr  # the shadow really hides the installed torch
    result = _pytest(["-p", "no:xdist", "tests/layers/test_bias.py", "-k", "not vit_bias"], extra_path=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "error" not in result.stdout.lower()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_tensorflow_tests_before_timm_tests_in_one_process(workers):
    """tests/layers (imports keras_vit) is collected before tests/training/test_schedules.py (imports timm)."""
    result = _pytest([*workers, "tests/layers/test_bias.py", "tests/training/test_schedules.py", "-k", "not vit_bias"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
