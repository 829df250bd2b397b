"""TF Serving's production flags, UNIMPLEMENTED methods and version states on `ModelServer`."""

import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from keras_vit import export
from keras_vit.export import loaded_version, repository
from tests.export.export_helpers import rest

GOOD = {"instances": np.zeros((1, 32, 32, 3)).tolist()}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def base(vit_export, tmp_path):
    path = tmp_path / "tiny_vit"
    shutil.copytree(vit_export, path / "1")
    return path


def slowed(monkeypatch, seconds):
    """Makes every signature call take `seconds` longer (the server looks `run_signature` up per call)."""
    real = loaded_version.run_signature

    def slow(*args):
        time.sleep(seconds)
        return real(*args)

    monkeypatch.setattr(loaded_version, "run_signature", slow)


@pytest.mark.parametrize("batching", [False, True])
def test_rest_timeout_answers_deadline_exceeded(base, monkeypatch, batching):
    from keras_vit.export.batching import BatchingParameters

    params = BatchingParameters(num_batch_threads=1) if batching else None
    with export.ModelServer(
        {"tiny_vit": str(base)}, rest_port=0, grpc_port=None, poll_seconds=0, batching=params, rest_timeout_seconds=0.2
    ) as server:
        assert rest(server.rest_port, "POST", "/v1/models/tiny_vit:predict", GOOD)[0] == 200
        slowed(monkeypatch, 1.0)
        if batching:  # the batcher holds its own reference to the call
            server.batcher._run = loaded_version.run_signature
        started = time.monotonic()
        status, body = rest(server.rest_port, "POST", "/v1/models/tiny_vit:predict", GOOD)
        assert status == 504 and body == {"error": "Deadline exceeded after 200 ms."}
        assert time.monotonic() - started < 0.9  # answered at the deadline, not after the call


def test_grpc_max_threads_bounds_concurrent_calls(base, monkeypatch):
    def two_calls_seconds(workers):
        with export.ModelServer(
            {"tiny_vit": str(base)}, rest_port=None, grpc_port=0, poll_seconds=0, grpc_workers=workers
        ) as server:
            channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "tiny_vit"
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 32, 32, 3), np.float32)))
            stub.Predict(request, timeout=30)  # connected and traced
            started = time.monotonic()
            calls = [stub.Predict.future(request, timeout=30) for _ in range(2)]
            for call in calls:
                call.result()
            channel.close()
            return time.monotonic() - started

    slowed(monkeypatch, 0.6)
    assert two_calls_seconds(1) >= 1.2  # one thread: the calls queue
    assert two_calls_seconds(2) < 1.1  # two threads: they overlap
    with pytest.raises(ValueError, match=r"Received: grpc_workers=0"):
        export.ModelServer({"tiny_vit": str(base)}, grpc_workers=0)


def test_model_config_file_is_polled_and_applied(vit_export, tmp_path):
    config = tmp_path / "models.config"
    for name in ("a", "b"):
        shutil.copytree(vit_export, tmp_path / name / "1")
    export.write_models_config(str(config), {"a": str(tmp_path / "a")})

    def served(port):
        answers = {n: rest(port, "GET", f"/v1/models/{n}") for n in ("a", "b")}
        return {
            n
            for n, (code, body) in answers.items()
            if code == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
        }

    def wait_for(port, want):
        deadline = time.monotonic() + 30
        while served(port) != want and time.monotonic() < deadline:
            time.sleep(0.05)
        return served(port)

    models = export.read_models_config(str(config))
    with export.ModelServer(
        models, rest_port=0, grpc_port=None, poll_seconds=0, config_file=str(config), config_poll_seconds=0.1
    ) as server:
        assert served(server.rest_port) == {"a"}
        export.write_models_config(str(config), {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")})
        assert wait_for(server.rest_port, {"a", "b"}) == {"a", "b"}
        assert rest(server.rest_port, "POST", "/v1/models/b:predict", GOOD)[0] == 200
        export.write_models_config(str(config), {"b": str(tmp_path / "b")})
        assert wait_for(server.rest_port, {"b"}) == {"b"}
        status, body = rest(server.rest_port, "POST", "/v1/models/a:predict", GOOD)
        assert status == 404 and "Servable not found for request: Latest(a)" in body["error"]
        config.write_text("model_config_list { config { name: 'b' base_path: ")  # broken: keeps serving b
        time.sleep(0.4)
        assert served(server.rest_port) == {"b"}
    export.write_models_config(str(config), {"a": str(tmp_path / "a")})
    with export.ModelServer(models, rest_port=0, grpc_port=None, poll_seconds=0, config_file=str(config)) as server:
        export.write_models_config(str(config), {"b": str(tmp_path / "b")})  # 0: read once, never again
        time.sleep(0.4)
        assert served(server.rest_port) == {"a"}
    with pytest.raises(ValueError, match=r"only with a `config_file`"):
        export.ModelServer(models, config_poll_seconds=1.0)


@pytest.mark.slow  # a fresh interpreter importing TensorFlow: ~20 s on 2 cores
def test_tensorflow_thread_pools_are_set_before_the_first_op():
    script = """
import collections, glob
from keras_vit.export.server import set_tensorflow_threads
set_tensorflow_threads(6, 3)
import tensorflow as tf
x = tf.random.normal((256, 256))
tf.matmul(x, x).numpy()
names = collections.Counter(open(p).read().strip() for p in glob.glob("/proc/self/task/*/comm"))
print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
print(names["tf_Compute"], names["python"])
try:
    set_tensorflow_threads(2, 2)
except ValueError as error:
    print(error)
"""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    settings, threads, error = result.stdout.strip().splitlines()[-3:]
    assert settings == "6 3"
    inter_threads, intra_threads = map(int, threads.split())
    assert inter_threads == 3  # TensorFlow's inter-op pool threads are named tf_Compute
    assert intra_threads >= 6  # the intra-op (Eigen) pool's threads inherit the process name
    assert "fixed once it ran an op" in error and "Received: intra_op=2, inter_op=2" in error
    with pytest.raises(ValueError, match=r"Received: tensorflow_intra_op_parallelism=-1"):
        export.server.set_tensorflow_threads(-1, 0)


def test_classify_regress_answer_unimplemented_without_traceback(base, caplog, capfd):
    with export.ModelServer({"tiny_vit": str(base)}, rest_port=None, grpc_port=0, poll_seconds=0) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        calls = [
            (stub.Classify, classification_pb2.ClassificationRequest(), "Classify"),
            (stub.Regress, regression_pb2.RegressionRequest(), "Regress"),
            (stub.MultiInference, inference_pb2.MultiInferenceRequest(), "MultiInference"),
            (model_stub.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest(), "HandleReload"),
        ]
        with caplog.at_level(logging.DEBUG):
            for method, request, name in calls:
                with pytest.raises(grpc.RpcError) as info:
                    method(request, timeout=30)
                assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert info.value.details().startswith(f"{name}") and "call Predict" in info.value.details()
        channel.close()
    logged = caplog.text + "".join(capfd.readouterr())
    assert "Traceback" not in logged and "Exception calling application" not in logged


def test_swapped_out_version_is_reported_end(base, vit_export):
    with export.ModelServer({"tiny_vit": str(base)}, rest_port=0, grpc_port=0, poll_seconds=0) as server:
        shutil.copytree(vit_export, base / "2")
        server.repository.refresh()
        ok = {"error_code": "OK", "error_message": ""}
        status, body = rest(server.rest_port, "GET", "/v1/models/tiny_vit")
        assert status == 200 and body == {
            "model_version_status": [
                {"version": "2", "state": "AVAILABLE", "status": ok},
                {"version": "1", "state": "END", "status": ok},
            ]
        }
        status, body = rest(server.rest_port, "GET", "/v1/models/tiny_vit/versions/1")
        assert body == {"model_version_status": [{"version": "1", "state": "END", "status": ok}]}
        status, body = rest(server.rest_port, "POST", "/v1/models/tiny_vit/versions/1:predict", GOOD)
        assert status == 404 and "Specific(tiny_vit, 1)" in body["error"]
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "tiny_vit"
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
        states = [(s.version, s.state, s.status.error_code) for s in response.model_version_status]
        State = get_model_status_pb2.ModelVersionStatus
        assert states == [(2, State.AVAILABLE, 0), (1, State.END, 0)]
        shutil.rmtree(base / "2")  # a rollback: 1 serves again, 2 ends
        server.repository.refresh()
        entries = rest(server.rest_port, "GET", "/v1/models/tiny_vit")[1]["model_version_status"]
        assert [(e["version"], e["state"]) for e in entries] == [("2", "END"), ("1", "AVAILABLE")]
        channel.close()


def test_version_loading_is_reported_loading(base, vit_export, monkeypatch):
    release, entered = threading.Event(), threading.Event()
    real = repository.load_version

    def slow_load(*args):
        entered.set()
        release.wait(30)
        return real(*args)

    repo = repository.ModelRepository({"tiny_vit": str(base)}, poll_seconds=0)
    repo.refresh()
    shutil.copytree(vit_export, base / "2")
    monkeypatch.setattr(repository, "load_version", slow_load)
    loader = threading.Thread(target=repo.refresh)
    loader.start()
    try:
        assert entered.wait(30)
        assert [(e["version"], e["state"]) for e in repo.status("tiny_vit")] == [("2", "LOADING"), ("1", "AVAILABLE")]
        assert repo.get("tiny_vit").version == 1  # still served while 2 loads
    finally:
        release.set()
        loader.join(60)
    assert [(e["version"], e["state"]) for e in repo.status("tiny_vit")] == [("2", "AVAILABLE"), ("1", "END")]


def test_loading_versions_leaves_no_gradient_registrations(vit_export):
    """Each `tf.saved_model.load` registers the model's custom gradients process-wide; swaps must not pile them up."""
    import gc

    from tensorflow.python.framework import ops

    registry = ops._gradient_registry._registry
    repository.load_version("tiny_vit", 1, vit_export)
    gc.collect()
    before = len(registry)
    loaded = [repository.load_version("tiny_vit", v, vit_export) for v in (2, 3)]
    assert len(registry) == before
    outputs = loaded_version.run_signature(
        loaded[1], "serving_default", {"images": np.zeros((1, 32, 32, 3), np.float32)}
    )
    assert outputs["logits"].shape == (1, 10)  # inference needs none of them
