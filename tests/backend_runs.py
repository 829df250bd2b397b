"""Run one script under Keras's TensorFlow and JAX backends, each in a fresh interpreter, and collect its output."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def outputs_on_tensorflow_and_jax(script: str, folder: Path, weights: str, **env: str) -> dict[str, np.ndarray]:
    """{backend: the array `script` saved}. The script gets `weights` (the first run writes it, the second
    loads it, so both backends see the same values) and the path of the `.npy` file to write."""
    (folder / "run.py").write_text(script)
    results = {}
    for backend in ("tensorflow", "jax"):
        out = str(folder / f"{backend}.npy")
        variables = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run(
            [sys.executable, str(folder / "run.py"), weights, out],
            env={**variables, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[backend] = np.load(out)
    return results
