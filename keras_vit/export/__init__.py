"""Export for deployment: SavedModel for TF Serving, LiteRT, ONNX, and a TF-Serving-compatible server.

    keras_vit.export.saved_model(model, "saved_models/vit/1", class_names=names, verify=True)
    keras_vit.export.litert(model, "vit.tflite")
    keras_vit.export.onnx(model, "vit.onnx")
    keras_vit.export.write_models_config("saved_models/models.config", {"vit": "saved_models/vit"})
    keras_vit.export.ModelServer({"vit": "saved_models/vit"}).start()   # keras-vit serve

The server pieces (`ModelServer`) need the `serve` extra, the converters the
`export` extra; both are imported only when used.
"""

from keras_vit.export.litert import litert, run_litert
from keras_vit.export.metadata import ServingMetadata, metadata_for_model
from keras_vit.export.models_config import read_models_config, write_models_config
from keras_vit.export.onnx_export import onnx, run_onnx
from keras_vit.export.preprocessing import decode_and_preprocess, preprocess
from keras_vit.export.saved_model import list_versions, load_metadata, saved_model, verify_saved_model
from keras_vit.export.signatures import BYTES_SIGNATURE, DEFAULT_SIGNATURE, FEATURES_SIGNATURE


def __getattr__(name):
    if name == "ModelServer":  # grpc and tensorflow-serving-api load only when a server is wanted
        from keras_vit.export.server import ModelServer

        return ModelServer
    raise AttributeError(f"module 'keras_vit.export' has no attribute {name!r}")


__all__ = [
    "BYTES_SIGNATURE",
    "DEFAULT_SIGNATURE",
    "FEATURES_SIGNATURE",
    "ModelServer",
    "ServingMetadata",
    "decode_and_preprocess",
    "list_versions",
    "litert",
    "load_metadata",
    "metadata_for_model",
    "onnx",
    "preprocess",
    "read_models_config",
    "run_litert",
    "run_onnx",
    "saved_model",
    "verify_saved_model",
    "write_models_config",
]
