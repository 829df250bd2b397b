"""TF Serving's gRPC `PredictionService` (Predict, GetModelMetadata) and `ModelService` (GetModelStatus).

Built on the official protos of `tensorflow-serving-api`, so clients written
for `tensorflow_model_server` (a `PredictionServiceStub` and a
`PredictRequest`) work unchanged. Errors carry TF Serving's status codes;
Classify, Regress, MultiInference and HandleReloadConfigRequest answer
UNIMPLEMENTED (the exported signatures are predict signatures).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from keras_vit.export.errors import CODE_BY_NUMBER, ServingError, invalid
from keras_vit.export.loaded_version import LoadedVersion, run_signature
from keras_vit.export.predict import DEFAULT_SIGNATURE
from keras_vit.export.repository import ModelRepository

Runner = Callable[[LoadedVersion, str, dict, "float | None"], dict]
_NUMBER_BY_CODE = {name: number for number, name in CODE_BY_NUMBER.items()}

log = logging.getLogger("keras_vit.serve")


def _abort(context: grpc.ServicerContext, error: ServingError):
    context.abort(getattr(grpc.StatusCode, error.code), error.message)


def _unimplemented(method: str, context: grpc.ServicerContext):
    """Answers UNIMPLEMENTED without a traceback in the server log."""
    context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{method} is not served by keras-vit serve: the exported signatures are predict signatures; "
        "call Predict (REST :predict) instead.",
    )


def _run_now(loaded: LoadedVersion, signature: str, inputs: dict, timeout: float | None) -> dict:
    return run_signature(loaded, signature, inputs)


def _requested_version(model_spec) -> int | None:
    if model_spec.HasField("version_label"):
        raise ServingError("UNIMPLEMENTED", "Version labels are not served here; ask for a version number.")
    return model_spec.version.value if model_spec.HasField("version") else None


def _tensor_to_array(name: str, proto, expected_dtype) -> np.ndarray:
    import tensorflow as tf

    if proto.dtype != expected_dtype.as_datatype_enum:
        got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "DT_INVALID"
        raise invalid(f"Input '{name}' expects {expected_dtype.name} but {got} is provided.")
    try:
        return tf.make_ndarray(proto)
    except Exception as error:  # noqa: BLE001  (any malformed client proto is the client's INVALID_ARGUMENT, not a server crash)
        raise invalid(f"Input '{name}' is not a valid TensorProto: {error}") from None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over a `ModelRepository`; `run` answers each Predict call."""

    def __init__(self, repository: ModelRepository, run: Runner = _run_now):
        self.repository = repository
        self.run = run

    def Predict(self, request, context):
        import tensorflow as tf

        try:
            name = request.model_spec.name
            loaded = self.repository.get(name, _requested_version(request.model_spec))
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature not in loaded.signatures:
                raise invalid(
                    f'Serving signature name: "{signature}" not found in signature def. '
                    f"Available: {sorted(loaded.signatures)}"
                )
            specs = loaded.input_specs(signature)
            unknown = sorted(set(request.inputs) - set(specs))
            if unknown:
                raise invalid(f"Unexpected input(s) {unknown}; signature '{signature}' takes {sorted(specs)}.")
            inputs = {key: _tensor_to_array(key, request.inputs[key], specs[key].dtype) for key in request.inputs}
            outputs = self.run(loaded, signature, inputs, context.time_remaining())
            wanted = list(request.output_filter) or sorted(outputs)
            missing = sorted(set(wanted) - set(outputs))
            if missing:
                raise invalid(f"output tensor alias not found in signature: {missing[0]}")
            response = predict_pb2.PredictResponse()
            response.model_spec.name = name
            response.model_spec.version.value = loaded.version
            response.model_spec.signature_name = signature
            for key in wanted:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response
        except ServingError as error:
            _abort(context, error)
        except Exception as error:
            log.exception("gRPC Predict failed")
            _abort(context, ServingError("INTERNAL", f"{type(error).__name__}: {error}"))

    def GetModelMetadata(self, request, context):
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
            unsupported = [f for f in fields if f != "signature_def"]
            if unsupported:
                raise invalid(f"Metadata field {unsupported[0]} is not supported")
            loaded = self.repository.get(request.model_spec.name, _requested_version(request.model_spec))
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, value in loaded.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(value)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = loaded.name
            response.model_spec.version.value = loaded.version
            response.metadata["signature_def"].Pack(signature_map)
            return response
        except ServingError as error:
            _abort(context, error)

    def Classify(self, request, context):
        _unimplemented("Classify", context)

    def Regress(self, request, context):
        _unimplemented("Regress", context)

    def MultiInference(self, request, context):
        _unimplemented("MultiInference", context)


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus: each version's state (LOADING, AVAILABLE, END) and load error, as TF Serving reports it."""

    def __init__(self, repository: ModelRepository):
        self.repository = repository

    def GetModelStatus(self, request, context):
        try:
            version = _requested_version(request.model_spec)
            entries = self.repository.status(request.model_spec.name, version)
        except ServingError as error:
            _abort(context, error)
            return None
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in entries:
            status = response.model_version_status.add()
            status.version = int(entry["version"])
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"])
            status.status.error_message = entry["status"]["error_message"]
            status.status.error_code = _NUMBER_BY_CODE[entry["status"]["error_code"]]
        return response

    def HandleReloadConfigRequest(self, request, context):
        _unimplemented("HandleReloadConfigRequest", context)


def make_grpc_server(
    repository: ModelRepository,
    host: str,
    port: int,
    max_request_bytes: int,
    max_workers: int = 8,
    run: Runner = _run_now,
) -> tuple[grpc.Server, int]:
    """A gRPC server with both services bound to `host:port` (0 picks a free port); returns it and the port.

    `max_workers` threads answer calls (TF Serving's `--grpc_max_threads`); `run` answers each Predict.
    """
    options = [
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", max(max_request_bytes, 64 << 20)),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="keras-vit-grpc"), options=options
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(repository, run), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(repository), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise ValueError(f"Could not bind the gRPC port {host}:{port}; is it in use? Received: port={port}")
    return server, bound
