"""`keras-vit export` and `keras-vit serve` as a user runs them (subprocesses).

examples/export_and_serve.py runs in tests/examples/test_examples.py.
"""

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.export.export_helpers import CIFAR10_NAMES, rest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def keras_vit(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "keras_vit.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_export_all_formats_with_verify_then_serve(vit, tmp_path):
    keras_file = tmp_path / "finetuned.keras"
    vit.save(keras_file)
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(CIFAR10_NAMES) + "\n")
    out = tmp_path / "saved_models"
    result = keras_vit(
        "export",
        f"--keras_file={keras_file}",
        "--name=tiny",
        f"--output_dir={out}",
        "--formats=saved_model,litert,onnx",
        "--mean=0.5,0.5,0.5",
        "--std=0.25,0.25,0.25",
        "--crop_pct=0.875",
        f"--class_names={names}",
        "--top_k=2",
        "--verify",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["saved_model"] == str(out / "tiny" / "1")
    assert report["litert_max_abs_diff"] <= 1e-4 and report["onnx_max_abs_diff"] <= 1e-4
    assert os.path.exists(out / "tiny" / "tiny.tflite") and os.path.exists(out / "tiny" / "tiny.onnx")
    assert "name: 'tiny'" in (out / "models.config").read_text()

    command = [
        sys.executable,
        "-m",
        "keras_vit.cli",
        "serve",
        f"--model_config_file={out}/models.config",
        "--rest_api_port=0",
        "--port=0",
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    try:
        port, deadline = None, time.monotonic() + 120
        while port is None and time.monotonic() < deadline:
            try:
                match = re.search(r"REST on http://127\.0\.0\.1:(\d+)", lines.get(timeout=1))
            except queue.Empty:
                assert server.poll() is None, "keras-vit serve exited"
                continue
            port = int(match.group(1)) if match else None
        assert port, "keras-vit serve did not report its port"
        status, body = rest(port, "GET", "/v1/models/tiny")
        assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
        images = np.random.default_rng(0).uniform(0, 255, (3, 40, 40, 3)).round().tolist()
        status, body = rest(port, "POST", "/v1/models/tiny:predict", {"instances": images})
        assert status == 200 and len(body["predictions"]) == 3
        assert all(len(p["labels"]) == 2 and set(p["labels"]) <= set(CIFAR10_NAMES) for p in body["predictions"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert sorted(os.listdir(out / "tiny")) == ["1", "tiny.onnx", "tiny.tflite"]  # no temporary files left


def test_bad_command_line_is_a_clean_error(tmp_path):
    result = keras_vit("export", f"--output_dir={tmp_path}")
    assert result.returncode == 2 and "Give --model" in result.stderr and "Traceback" not in result.stderr


def test_serve_takes_tf_serving_production_flags(vit_export, tmp_path):
    import shutil

    base = tmp_path / "tiny_vit"
    shutil.copytree(vit_export, base / "1")
    config = tmp_path / "models.config"
    config.write_text(
        f"model_config_list {{ config {{ name: 'tiny' base_path: '{base}' model_platform: 'tensorflow' }} }}"
    )
    batching = tmp_path / "batching.config"
    batching.write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\nnum_batch_threads { value: 2 }\n"
    )
    flags = [
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=60",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        "--rest_api_timeout_in_ms=20000",
        "--tensorflow_intra_op_parallelism=2",
        "--tensorflow_inter_op_parallelism=2",
        "--grpc_max_threads=4",
        "--rest_api_port=0",
        "--port=0",
    ]
    command = [sys.executable, "-m", "keras_vit.cli", "serve", *flags]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    seen = []
    try:
        port, deadline = None, time.monotonic() + 120
        while port is None and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                assert server.poll() is None, "keras-vit serve exited"
                continue
            match = re.search(r"REST on http://127\.0\.0\.1:(\d+)", seen[-1])
            port = int(match.group(1)) if match else None
        assert port, seen
        assert any("max_batch_size=8" in line and "num_batch_threads=2" in line for line in seen), seen
        images = np.random.default_rng(0).uniform(0, 255, (9, 32, 32, 3)).round().tolist()
        status, body = rest(port, "POST", "/v1/models/tiny:predict", {"instances": images[:3]})
        assert status == 200 and len(body["predictions"]) == 3
        status, body = rest(port, "POST", "/v1/models/tiny:predict", {"instances": images})
        assert status == 400 and "Task size 9 is larger than maximum input batch size 8" in body["error"]
    finally:
        server.terminate()
        server.wait(timeout=30)

    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micro { value: 1000 }\n")
    result = keras_vit(
        "serve", f"--model_config_file={config}", "--enable_batching", f"--batching_parameters_file={batching}"
    )
    assert result.returncode == 2 and "batch_timeout_micro" in result.stderr and "Traceback" not in result.stderr
