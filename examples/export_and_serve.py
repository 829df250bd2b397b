"""Export a model for TF Serving, serve it locally, and call it over REST and gRPC.

    python examples/export_and_serve.py --smoke                      # tiny model, temp folder, ~1 minute on CPU
    python examples/export_and_serve.py --keras_file finetuned.keras --model vit_cifar_patch4_32 \
        --output_dir saved_models

The same SavedModel folder runs under the real TF Serving (see README, "Export and serving"):
    docker run -p 8501:8501 -p 8500:8500 \
        --mount type=bind,source=$PWD/saved_models/vit_cifar_patch4_32,target=/models/vit_cifar_patch4_32 \
        -e MODEL_NAME=vit_cifar_patch4_32 tensorflow/serving
and the two clients below work against it unchanged. The last line reports that
both protocols answered with the same classes; the script exits with an error
(non-zero status) when a request fails or the two answers differ.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import tempfile

import sklearn.datasets

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def rest_call(port: int, method: str, path: str, body: dict | None = None) -> dict:
    """Plain REST JSON, as any TF Serving client sends it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(method, path, body=None if body is None else json.dumps(body))
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"{method} {path} -> {response.status}: {answer}")
    return answer


def grpc_call(port: int, name: str, jpeg: bytes) -> dict:
    """A gRPC client written only against TF Serving's public API."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata_request.model_spec.name = name
        signatures = get_model_metadata_pb2.SignatureDefMap()
        stub.GetModelMetadata(metadata_request, timeout=60).metadata["signature_def"].Unpack(signatures)
        (input_name,) = signatures.signature_def["serve_image_bytes"].inputs  # the SignatureDef's own name
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = "serve_image_bytes"
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto([jpeg]))
        response = stub.Predict(request, timeout=60)
        return {key: tf.make_ndarray(value).tolist() for key, value in response.outputs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vit_cifar_patch4_32", help="registered name (preprocessing, classes)")
    parser.add_argument("--keras_file", help="a trained .keras model to export instead of a fresh one")
    parser.add_argument("--output_dir", help="where saved_models go (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="tiny model (depth 1, width 32): a fast end-to-end check")
    args = parser.parse_args()

    import keras

    import keras_vit

    if args.keras_file:
        model = keras.saving.load_model(args.keras_file)
    elif args.smoke:
        model = keras_vit.create_model(args.model, depth=1, hidden_dim=32, num_heads=2, mlp_dim=64)
    else:
        model = keras_vit.create_model(args.model)
    if not args.keras_file:
        print("note: an untrained model (zero head) answers every image the same; pass --keras_file for real answers")
    classes = CIFAR10_NAMES if model.output_shape[-1] == 10 else None
    if args.output_dir:
        run(model, args.model, args.output_dir, classes)
    else:
        with tempfile.TemporaryDirectory(prefix="keras_vit_saved_models_") as output_dir:
            run(model, args.model, output_dir, classes)


def run(model, name: str, output_dir: str, classes: list[str] | None) -> None:
    """Export, serve, and ask over REST and gRPC."""
    from keras_vit import export

    # 1. Export: <output_dir>/<name>/<version>, written to a temporary folder and renamed into place.
    version_path = export.saved_model(model, os.path.join(output_dir, name), class_names=classes, verify=True)
    config = export.write_models_config(
        os.path.join(output_dir, "models.config"), {name: os.path.join(output_dir, name)}
    )
    print(f"exported {version_path}\nmodels.config: {config}")

    # 2. Serve it locally (127.0.0.1, free ports), as `keras-vit serve --model_config_file=...` would.
    with open(os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", "china.jpg"), "rb") as f:
        jpeg = f.read()  # a real photograph shipped with scikit-learn
    with export.ModelServer(export.read_models_config(config), rest_port=0, grpc_port=0) as server:
        status = rest_call(server.rest_port, "GET", f"/v1/models/{name}")
        print("status:", status["model_version_status"])
        request = {"signature_name": "serve_image_bytes", "instances": [{"b64": base64.b64encode(jpeg).decode()}]}
        rest_answer = rest_call(server.rest_port, "POST", f"/v1/models/{name}:predict", request)
        prediction = rest_answer["predictions"][0]
        print("REST top classes:", prediction.get("labels", prediction["classes"]), prediction["scores"])
        grpc_answer = grpc_call(server.grpc_port, name, jpeg)
        print("gRPC top classes:", grpc_answer["classes"][0], grpc_answer["scores"][0])
        if grpc_answer["classes"][0] != prediction["classes"]:
            raise SystemExit("REST and gRPC disagree")
        print(f"check: REST and gRPC both answered with the same top {len(prediction['classes'])} classes: ok")


if __name__ == "__main__":
    main()
