"""The training examples run end to end in their --smoke mode (offline)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.parametrize("script, expected", [
    ("quickstart.py", "held-out accuracy"),
    ("train_cifar10.py", "synthetic random CIFAR-format data"),
])
def test_example_smoke(script, expected, tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), "--smoke",
                           "--run_dir", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout
