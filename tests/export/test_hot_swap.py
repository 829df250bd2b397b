"""A new version written while the server answers: no request lost, never a partial model."""

import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from keras_vit import export
from tests.export.export_helpers import EXPORT_ARGS, rest, tiny_model

pytestmark = pytest.mark.slow


def test_new_version_swaps_in_without_losing_requests(vit, vit_export, tmp_path):
    base = tmp_path / "tiny_vit"
    shutil.copytree(vit_export, base / "1")
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    meta = export.load_metadata(vit_export)
    successor = tiny_model(seed=5)
    expected = {
        1: np.asarray(vit(export.preprocess(images, meta))),
        2: np.asarray(successor(export.preprocess(images, meta))),
    }
    assert np.abs(expected[1] - expected[2]).max() > 0.1  # the versions are told apart by their answers

    def version_of(logits):
        matches = [v for v, e in expected.items() if np.abs(np.asarray(logits) - e).max() <= 1e-5]
        return matches[0] if len(matches) == 1 else None  # None: neither complete model gave this answer

    stop = threading.Event()
    results = {"rest-0": [], "rest-1": [], "grpc": []}

    with export.ModelServer({"tiny_vit": str(base)}, rest_port=0, grpc_port=0, poll_seconds=0.05) as server:

        def rest_client(key):
            for _ in range(2000):  # bounded; stopped by the event long before
                if stop.is_set():
                    return
                status, body = rest(
                    server.rest_port, "POST", "/v1/models/tiny_vit:predict", {"inputs": images.tolist()}, timeout=60
                )
                results[key].append((status, version_of(body["outputs"]["logits"]) if status == 200 else body))
                time.sleep(0.02)  # leave the two CPUs some room for the export

        def grpc_client():
            channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "tiny_vit"
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
            for _ in range(2000):
                if stop.is_set():
                    break
                try:
                    response = stub.Predict(request, timeout=60)
                    results["grpc"].append((200, version_of(tf.make_ndarray(response.outputs["logits"]))))
                except grpc.RpcError as error:
                    results["grpc"].append((error.code(), error.details()))
                time.sleep(0.02)
            channel.close()

        threads = [threading.Thread(target=rest_client, args=(f"rest-{i}",)) for i in range(2)]
        threads.append(threading.Thread(target=grpc_client))
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while min(len(r) for r in results.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        export.saved_model(successor, str(base / "2"), **EXPORT_ARGS)  # written beside the served version
        while time.monotonic() < deadline:
            if all(sum(1 for _, v in r[-3:] if v == 2) == 3 for r in results.values()):
                break
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        assert rest(server.rest_port, "GET", "/v1/models/tiny_vit")[1]["model_version_status"][0]["version"] == "2"

    for key, answers in results.items():
        assert answers, key
        assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
        versions = [v for _, v in answers]
        assert None not in versions, f"{key}: an answer matched neither complete version"
        assert versions[0] == 1 and versions[-1] == 2, f"{key}: {versions}"
        first_new = versions.index(2)
        assert set(versions[first_new:]) == {2}, f"{key}: served the old version after the new one"
