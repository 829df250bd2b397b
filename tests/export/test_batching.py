"""`--enable_batching`: TF Serving's batching parameters file, and batches formed from concurrent requests."""

import dataclasses
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from keras_vit import export
from keras_vit.export.batching import Batcher, BatchingParameters, parse_batching_parameters, read_batching_parameters
from keras_vit.export.errors import ServingError
from keras_vit.export.loaded_version import load_version, run_signature
from tests.export.export_helpers import rest

FULL_FILE = """
max_batch_size { value: 32 }
batch_timeout_micros { value: 1000 }
num_batch_threads { value: 4 }
max_enqueued_batches { value: 100 }
allowed_batch_sizes: 8
allowed_batch_sizes: 16
allowed_batch_sizes: 32
pad_variable_length_inputs: true
"""


def test_parameters_file_in_tf_serving_text_format(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text(FULL_FILE)
    params = read_batching_parameters(str(path))
    assert params == BatchingParameters(
        max_batch_size=32,
        batch_timeout_micros=1000,
        num_batch_threads=4,
        max_enqueued_batches=100,
        allowed_batch_sizes=(8, 16, 32),
        pad_variable_length_inputs=True,
    )
    assert [params.padded_size(n) for n in (1, 8, 9, 17, 32)] == [8, 8, 16, 32, 32]
    defaults = parse_batching_parameters("")  # an empty file keeps TF Serving's defaults
    assert (defaults.max_batch_size, defaults.batch_timeout_micros, defaults.max_enqueued_batches) == (1000, 0, 10)
    split = parse_batching_parameters(
        "max_batch_size { value: 64 } enable_large_batch_splitting { value: true } max_execution_batch_size { value: 8 }"
    )
    assert split.execution_batch_size == 8


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_batch_size: 32", r"max_batch_size"),  # a wrapper message, not a scalar, in TF Serving's proto
        ("max_batch_sise { value: 32 }", r'no field named "max_batch_sise"'),
        ("max_batch_size { value: 0 }", r"`max_batch_size` must be an int >= 1. Received: max_batch_size=0"),
        ("num_batch_threads { value: -2 }", r"Received: num_batch_threads=-2"),
        (
            "max_batch_size { value: 32 } allowed_batch_sizes: 8 allowed_batch_sizes: 16",
            r"allowed_batch_sizes=\[8, 16\]",
        ),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2", r"positive and increasing"),
    ],
)
def test_bad_parameters_name_the_field(text, message):
    with pytest.raises(ValueError, match=message):
        parse_batching_parameters(text, "batching.config")


def test_missing_parameters_file():
    with pytest.raises(ValueError, match=r"Received: --batching_parameters_file=nope.config"):
        read_batching_parameters("nope.config")


@pytest.fixture(scope="module")
def loaded(vit_export):
    return load_version("tiny_vit", 1, vit_export)


class CountingRun:
    """The real signature call, recording each call's batch size."""

    def __init__(self, delay: float = 0.0):
        self.sizes = []
        self.delay = delay

    def __call__(self, loaded, signature, inputs):
        self.sizes.append(len(next(iter(inputs.values()))))
        time.sleep(self.delay)
        return run_signature(loaded, signature, inputs)


def concurrent(fn, arguments):
    """Calls fn(*a) for each a in arguments from its own thread, all released at once; returns results or errors."""
    barrier = threading.Barrier(len(arguments))
    results = [None] * len(arguments)

    def call(i):
        barrier.wait()
        try:
            results[i] = fn(*arguments[i])
        except ServingError as error:
            results[i] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(arguments))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def images(batch_size, seed, height=32, width=32):
    return np.random.default_rng(seed).uniform(0, 255, (batch_size, height, width, 3)).astype("float32")


def test_concurrent_requests_share_one_call_and_get_their_own_answers(loaded):
    counting = CountingRun()
    params = BatchingParameters(max_batch_size=16, batch_timeout_micros=2_000_000, num_batch_threads=1)
    batcher = Batcher(params, run=counting)
    requests = [{"images": images(1 + i % 3, seed=i)} for i in range(8)]  # 1+2+3+1+2+3+1+2 = 15 examples
    try:
        results = concurrent(lambda inputs: batcher.run(loaded, "serving_default", inputs), [(r,) for r in requests])
    finally:
        batcher.stop()
    assert counting.sizes == [15], counting.sizes  # one call; the 2 s timeout never ran out
    assert batcher.stats == {15: 1}
    for request, result in zip(requests, results):
        alone = run_signature(loaded, "serving_default", request)
        assert set(result) == set(alone)
        np.testing.assert_allclose(result["logits"], alone["logits"], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(result["classes"], alone["classes"])
        np.testing.assert_array_equal(result["labels"], alone["labels"])


def test_full_batch_runs_at_once_and_pads_to_allowed_sizes(loaded):
    counting = CountingRun()
    params = BatchingParameters(
        max_batch_size=8, batch_timeout_micros=30_000_000, num_batch_threads=1, allowed_batch_sizes=(4, 8)
    )
    batcher = Batcher(params, run=counting)
    started = time.monotonic()
    try:
        results = concurrent(
            lambda inputs: batcher.run(loaded, "serving_default", inputs),
            [({"images": images(2, s)},) for s in range(4)],
        )
    finally:
        batcher.stop()
    assert time.monotonic() - started < 20  # full at 8: no wait for the 30 s timeout
    assert counting.sizes == [8] and all(r["logits"].shape == (2, 10) for r in results)
    batcher = Batcher(dataclasses.replace(params, batch_timeout_micros=0), run=counting)
    try:
        one = batcher.run(loaded, "serving_default", {"images": images(3, 9)})
    finally:
        batcher.stop()
    assert counting.sizes == [8, 4] and batcher.stats == {4: 1}  # 3 examples padded to 4 on the way in
    expected = run_signature(loaded, "serving_default", {"images": images(3, 9)})
    np.testing.assert_allclose(one["logits"], expected["logits"], rtol=0, atol=1e-5)  # and cut back to 3


def test_timeout_closes_a_partial_batch(loaded):
    counting = CountingRun()
    batcher = Batcher(BatchingParameters(max_batch_size=64, batch_timeout_micros=300_000), run=counting)
    try:
        started = time.monotonic()
        batcher.run(loaded, "serving_default", {"images": images(1, 0)})
        waited = time.monotonic() - started
    finally:
        batcher.stop()
    assert counting.sizes == [1] and 0.3 <= waited < 10


def test_large_requests_are_refused_or_split(loaded):
    counting = CountingRun()
    batcher = Batcher(BatchingParameters(max_batch_size=4), run=counting)
    with pytest.raises(ServingError, match="Task size 5 is larger than maximum input batch size 4") as info:
        batcher.run(loaded, "serving_default", {"images": images(5, 0)})
    assert info.value.code == "INVALID_ARGUMENT" and counting.sizes == []
    batcher.stop()
    params = BatchingParameters(max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=3)
    batcher = Batcher(params, run=counting)
    try:
        result = batcher.run(loaded, "serving_default", {"images": images(7, 1)})
    finally:
        batcher.stop()
    assert sorted(counting.sizes) == [1, 3, 3]
    expected = run_signature(loaded, "serving_default", {"images": images(7, 1)})
    np.testing.assert_allclose(result["logits"], expected["logits"], rtol=0, atol=1e-5)


def test_different_image_sizes_batch_apart_or_padded(loaded):
    counting = CountingRun()
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=500_000, num_batch_threads=1)
    batcher = Batcher(params, run=counting)
    small, large = {"images": images(1, 0, 32, 32)}, {"images": images(1, 1, 40, 36)}
    try:
        results = concurrent(lambda i: batcher.run(loaded, "serving_default", i), [(small,), (large,)])
    finally:
        batcher.stop()
    assert counting.sizes == [1, 1]  # shapes differ: never concatenated
    np.testing.assert_allclose(
        results[1]["logits"], run_signature(loaded, "serving_default", large)["logits"], atol=1e-5
    )
    params = BatchingParameters(
        max_batch_size=2, batch_timeout_micros=2_000_000, num_batch_threads=1, pad_variable_length_inputs=True
    )
    batcher = Batcher(params, run=counting)
    try:
        concurrent(lambda i: batcher.run(loaded, "serving_default", i), [(small,), (large,)])
    finally:
        batcher.stop()
    assert counting.sizes[2:] == [2]  # padded to 40x36 and run together


def test_bad_example_fails_alone_and_full_queue_is_unavailable(loaded):
    counting = CountingRun()
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=1_000_000, num_batch_threads=1)
    batcher = Batcher(params, run=counting)
    good = {"image_bytes": np.array([tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy()], dtype=object)}
    bad = {"image_bytes": np.array([b"not an image"], dtype=object)}
    try:
        results = concurrent(lambda i: batcher.run(loaded, "serve_image_bytes", i), [(good,), (bad,), (good,)])
    finally:
        batcher.stop()
    assert isinstance(results[1], ServingError) and results[1].code == "INVALID_ARGUMENT"
    assert results[0]["logits"].shape == (1, 10) and results[2]["logits"].shape == (1, 10)

    release = threading.Event()
    params = BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    batcher = Batcher(params, run=lambda *a: (release.wait(30), run_signature(*a))[1])
    first = threading.Thread(target=batcher.run, args=(loaded, "serving_default", {"images": images(1, 0)}))
    second = threading.Thread(target=batcher.run, args=(loaded, "serving_default", {"images": images(1, 1)}))
    try:
        first.start()
        deadline = time.monotonic() + 10
        while batcher._queues and time.monotonic() < deadline:  # the thread took the first batch
            time.sleep(0.01)
        second.start()  # queued: one batch, the limit
        while not batcher._queues and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ServingError, match="queue to which this task was submitted is full") as info:
            batcher.run(loaded, "serving_default", {"images": images(1, 2)})
        assert info.value.code == "UNAVAILABLE"
    finally:
        release.set()
        first.join(30)
        second.join(30)
        batcher.stop()


def test_server_batches_concurrent_rest_and_grpc_clients(vit_export, tmp_path):
    import shutil

    base = tmp_path / "tiny_vit"
    shutil.copytree(vit_export, base / "1")
    params = BatchingParameters(max_batch_size=12, batch_timeout_micros=2_000_000, num_batch_threads=1)
    inputs = [images(2, seed) for seed in range(6)]  # 12 examples: one full batch
    with export.ModelServer({"tiny_vit": str(base)}, rest_port=0, grpc_port=0, poll_seconds=0) as unbatched:
        expected = [
            rest(unbatched.rest_port, "POST", "/v1/models/tiny_vit:predict", {"inputs": x.tolist()})[1]["outputs"]
            for x in inputs
        ]
    with export.ModelServer(
        {"tiny_vit": str(base)}, rest_port=0, grpc_port=0, poll_seconds=0, batching=params
    ) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def call(i):
            if i % 2:
                return rest(server.rest_port, "POST", "/v1/models/tiny_vit:predict", {"inputs": inputs[i].tolist()})[1][
                    "outputs"
                ]
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "tiny_vit"
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(inputs[i]))
            response = stub.Predict(request, timeout=60)
            return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

        answers = concurrent(call, [(i,) for i in range(6)])
        channel.close()
        assert server.batcher.stats == {12: 1}, server.batcher.stats  # six clients, one model call
    for answer, want in zip(answers, expected):
        np.testing.assert_allclose(answer["logits"], want["logits"], rtol=0, atol=1e-5)
        assert np.asarray(answer["classes"]).tolist() == want["classes"]
