"""`keras-vit serve` against clients written only with TF Serving's public API."""

import base64
import io
import json
import os
import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from keras_vit import export
from tests.export.export_helpers import CIFAR10_NAMES, rest, sample_image_bytes

MAX_BYTES = 1 << 20


@pytest.fixture(scope="module")
def server(vit_export, tmp_path_factory):
    base = tmp_path_factory.mktemp("served") / "tiny_vit"
    shutil.copytree(vit_export, base / "1")
    with export.ModelServer(
        {"tiny_vit": str(base)}, rest_port=0, grpc_port=0, max_request_bytes=MAX_BYTES, poll_seconds=0.2
    ) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def keras_logits(model, pixels, path):
    return np.asarray(model(export.preprocess(pixels, export.load_metadata(path)), training=False))


def pixels(batch_size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch_size, 40, 36, 3)).astype("float32")


def test_status_and_metadata(server, vit_export):
    status, body = rest(server.rest_port, "GET", "/v1/models/tiny_vit")
    assert status == 200
    assert body == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert rest(server.rest_port, "GET", "/v1/models/tiny_vit/versions/1")[0] == 200
    status, body = rest(server.rest_port, "GET", "/v1/models/tiny_vit/versions/1/metadata")
    assert status == 200 and body["model_spec"] == {"name": "tiny_vit", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "serve_image_bytes", "features"}
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in default["inputs"]["images"]["tensor_shape"]["dim"]] == ["-1", "-1", "-1", "3"]
    assert set(default["outputs"]) == {"logits", "probabilities", "classes", "scores", "labels"}


@pytest.mark.parametrize("batch_size", [1, 7])
def test_rest_row_and_columnar_formats(server, vit, vit_export, batch_size):
    images = pixels(batch_size)
    expected = keras_logits(vit, images, vit_export)
    status, body = rest(server.rest_port, "POST", "/v1/models/tiny_vit:predict", {"instances": images.tolist()})
    assert status == 200, body
    assert len(body["predictions"]) == batch_size
    np.testing.assert_allclose([p["logits"] for p in body["predictions"]], expected, rtol=0, atol=1e-5)
    top = np.argsort(-expected, -1)[:, :3]
    assert [p["labels"] for p in body["predictions"]] == [[CIFAR10_NAMES[c] for c in row] for row in top]
    status, body = rest(
        server.rest_port,
        "POST",
        "/v1/models/tiny_vit/versions/1:predict",
        {"signature_name": "serving_default", "inputs": {"images": images.tolist()}},
    )
    assert status == 200, body
    np.testing.assert_allclose(body["outputs"]["logits"], expected, rtol=0, atol=1e-5)
    assert body["outputs"]["classes"] == top.tolist()
    status, body = rest(
        server.rest_port,
        "POST",
        "/v1/models/tiny_vit:predict",
        {"signature_name": "features", "inputs": images.tolist()},
    )
    assert status == 200
    features = vit.feature_extractor()(export.preprocess(images, export.load_metadata(vit_export)))
    np.testing.assert_allclose(body["outputs"], np.asarray(features), rtol=0, atol=1e-5)  # one output: bare value


def test_real_photograph_as_b64_jpeg_gets_the_keras_top_class(server, vit, vit_export):
    jpeg = sample_image_bytes("china.jpg")
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32)[None]  # decoded by PIL, not TF
    expected = keras_logits(vit, decoded, vit_export)[0]
    request = {"signature_name": "serve_image_bytes", "instances": [{"b64": base64.b64encode(jpeg).decode()}]}
    status, body = rest(server.rest_port, "POST", "/v1/models/tiny_vit:predict", request)
    assert status == 200, body
    prediction = body["predictions"][0]
    assert prediction["classes"][0] == int(np.argmax(expected))
    assert prediction["labels"][0] == CIFAR10_NAMES[int(np.argmax(expected))]
    probabilities = np.exp(expected - expected.max()) / np.exp(expected - expected.max()).sum()
    np.testing.assert_allclose(prediction["probabilities"], probabilities, atol=2e-3)


def test_grpc_client_uses_the_signature_defs_own_names(server, stub, vit, vit_export):
    """A TF Serving client: read the SignatureDef, build a PredictRequest from its names, compare."""
    meta_request = get_model_metadata_pb2.GetModelMetadataRequest()
    meta_request.model_spec.name = "tiny_vit"
    meta_request.metadata_field.append("signature_def")
    metadata = stub.GetModelMetadata(meta_request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signature_map)
    signature = signature_map.signature_def["serving_default"]
    (input_name,) = signature.inputs
    images = pixels(7, seed=3)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny_vit"
    request.model_spec.signature_name = "serving_default"
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(images))
    response = stub.Predict(request, timeout=30)
    assert set(response.outputs) == set(signature.outputs)
    assert response.model_spec.version.value == 1
    expected = keras_logits(vit, images, vit_export)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["logits"]), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["classes"]), np.argsort(-expected, -1)[:, :3])
    request.output_filter.append("classes")
    assert set(stub.Predict(request, timeout=30).outputs) == {"classes"}

    bytes_request = predict_pb2.PredictRequest()
    bytes_request.model_spec.name = "tiny_vit"
    bytes_request.model_spec.signature_name = "serve_image_bytes"
    (bytes_input,) = signature_map.signature_def["serve_image_bytes"].inputs
    bytes_request.inputs[bytes_input].CopyFrom(tf.make_tensor_proto([sample_image_bytes("flower.jpg")]))
    assert tf.make_ndarray(stub.Predict(bytes_request, timeout=30).outputs["logits"]).shape == (1, 10)

    status_stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "tiny_vit"
    (version_status,) = status_stub.GetModelStatus(status_request, timeout=30).model_version_status
    assert version_status.version == 1 and version_status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


GOOD = {"instances": [[[[0.0, 128.0, 255.0]] * 8] * 8]}
BAD_REST = [
    (
        "wrong shape",
        "/v1/models/tiny_vit:predict",
        {"instances": [[1.0, 2.0, 3.0]]},
        400,
        r"Input 'images' of signature 'serving_default' must have shape \[-1,-1,-1,3\]; received shape \[1,3\]",
    ),
    ("wrong channels", "/v1/models/tiny_vit:predict", {"instances": [[[[1.0, 2.0]]]]}, 400, r"must have shape"),
    (
        "wrong dtype",
        "/v1/models/tiny_vit:predict",
        {"instances": [[[["a", "b", "c"]]]]},
        400,
        r"expects float32 numbers; received strings",
    ),
    (
        "numbers to bytes",
        "/v1/models/tiny_vit:predict",
        {"signature_name": "serve_image_bytes", "instances": [1.0]},
        400,
        r"expects strings \(DT_STRING\)",
    ),
    (
        "not an image",
        "/v1/models/tiny_vit:predict",
        {"signature_name": "serve_image_bytes", "instances": [{"b64": base64.b64encode(b"not an image").decode()}]},
        400,
        r"Unknown image file format",
    ),
    (
        "bad base64",
        "/v1/models/tiny_vit:predict",
        {"signature_name": "serve_image_bytes", "instances": [{"b64": "%%%"}]},
        400,
        r"Unable to base64 decode",
    ),
    ("ragged", "/v1/models/tiny_vit:predict", {"instances": [[[[1.0, 2.0, 3.0]]], [[[1.0, 2.0]]]]}, 400, r"ragged"),
    (
        "unknown signature",
        "/v1/models/tiny_vit:predict",
        {"signature_name": "nope", "instances": [1]},
        400,
        r"Serving signature name: \"nope\" not found",
    ),
    ("no instances", "/v1/models/tiny_vit:predict", {"examples": []}, 400, r"Missing 'inputs' or 'instances' key"),
    ("unknown model", "/v1/models/resnet:predict", GOOD, 404, r"Servable not found for request: Latest\(resnet\)"),
    (
        "unknown version",
        "/v1/models/tiny_vit/versions/9:predict",
        GOOD,
        404,
        r"Servable not found for request: Specific\(tiny_vit, 9\)",
    ),
    ("malformed json", "/v1/models/tiny_vit:predict", b'{"instances": [1,', 400, r"JSON Parse error: .* at offset"),
    ("bad url", "/v1/modelz/tiny_vit:predict", GOOD, 404, r"Malformed request"),
    ("classify", "/v1/models/tiny_vit:classify", GOOD, 501, r"Only :predict"),
]


@pytest.mark.parametrize("case", BAD_REST, ids=[c[0] for c in BAD_REST])
def test_bad_rest_requests_get_status_and_message_then_service_goes_on(server, case):
    _, path, body, expected_status, message = case
    status, answer = rest(server.rest_port, "POST", path, body)
    assert status == expected_status and set(answer) == {"error"}
    assert __import__("re").search(message, answer["error"]), answer["error"]
    status, answer = rest(server.rest_port, "POST", "/v1/models/tiny_vit:predict", GOOD)
    assert status == 200 and len(answer["predictions"]) == 1


@pytest.mark.parametrize("expect_continue", [False, True])
def test_oversized_body_is_refused_unread(server, expect_continue):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    connection.putrequest("POST", "/v1/models/tiny_vit:predict")
    connection.putheader("Content-Length", str(MAX_BYTES + 1))
    if expect_continue:  # what curl sends before a large body
        connection.putheader("Expect", "100-continue")
    connection.endheaders()  # the body is never sent: the server must answer from the header alone
    response = connection.getresponse()
    assert response.status == 413
    assert "exceeds the limit of 1048576 bytes" in json.loads(response.read())["error"]
    connection.close()
    assert rest(server.rest_port, "POST", "/v1/models/tiny_vit:predict", GOOD)[0] == 200
    status, answer = rest(server.rest_port, "GET", "/v1/models/nope")
    assert status == 404 and "Could not find any versions of model nope" in answer["error"]


def _grpc_error(stub, request):
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    return info.value.code(), info.value.details()


def test_bad_grpc_requests_get_status_codes(server, stub):
    def request(name="tiny_vit", array=None, input_name="images", version=None):
        message = predict_pb2.PredictRequest()
        message.model_spec.name = name
        if version is not None:
            message.model_spec.version.value = version
        message.inputs[input_name].CopyFrom(tf.make_tensor_proto(pixels(1) if array is None else array))
        return message

    assert _grpc_error(stub, request(name="resnet")) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(resnet)",
    )
    assert _grpc_error(stub, request(version=4))[0] == grpc.StatusCode.NOT_FOUND
    code, details = _grpc_error(stub, request(array=pixels(1).astype("float64")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "expects float32 but float64 is provided" in details
    code, details = _grpc_error(stub, request(array=np.zeros((2, 5), np.float32)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "must have shape" in details
    code, details = _grpc_error(stub, request(input_name="pixels"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Unexpected input(s) ['pixels']" in details
    too_big = np.zeros((1, 400, 400, 3), np.float32)  # 1.9 MB > 1 MiB limit
    assert _grpc_error(stub, request(array=too_big))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Predict(request(), timeout=30).outputs["logits"].tensor_shape.dim[0].size == 1


def test_broken_version_is_never_served(vit_export, tmp_path):
    """A half-copied version folder (no variables) is skipped; the complete one keeps serving."""
    base = tmp_path / "m"
    shutil.copytree(vit_export, base / "1")
    (base / "2").mkdir()
    shutil.copy(os.path.join(vit_export, "saved_model.pb"), base / "2" / "saved_model.pb")
    repository = export.ModelServer({"m": str(base)}, rest_port=0, grpc_port=None, poll_seconds=0).repository
    repository.refresh()
    assert repository.get("m").version == 1
    states = {e["version"]: e["state"] for e in repository.status("m")}
    assert states == {"1": "AVAILABLE", "2": "END"}
    shutil.rmtree(base / "2")
    shutil.copytree(vit_export, base / "2")  # the copy finished: its files changed, so it is retried
    repository.refresh()
    assert repository.get("m").version == 2

    shutil.copytree(vit_export, base / "3")  # complete, but its warm-up request does not fit its signature
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 4), np.float32)))
    with tf.io.TFRecordWriter(str(base / "3" / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        writer.write(log.SerializeToString())
    repository.refresh()
    assert repository.get("m").version == 2
    (failed,) = [e for e in repository.status("m") if e["version"] == "3"]
    assert failed["state"] == "END" and "Warm-up request" in failed["status"]["error_message"]
