"""One loaded SavedModel version: its signatures, warm-up, and running a signature on checked inputs.

The REST and gRPC front ends and the model repository all go through `run_signature`,
so every request is validated against the signature the same way.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from keras_vit.export.errors import ServingError, from_op_error, invalid


@dataclasses.dataclass
class LoadedVersion:
    """One loaded version: its signatures and their `SignatureDef` protos."""

    name: str
    version: int
    path: str
    obj: Any
    signatures: dict[str, Any]
    signature_defs: dict[str, Any]  # name -> tensorflow.core.protobuf.meta_graph_pb2.SignatureDef

    def input_specs(self, signature: str) -> dict[str, Any]:
        return dict(self.signatures[signature].structured_input_signature[1])


def load_version(name: str, version: int, path: str) -> LoadedVersion:
    """Loads one SavedModel version with its `serve` tag and reads its SignatureDefs from `saved_model.pb`."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graphs = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        raise ValueError(f"{path!r} has no MetaGraph tagged 'serve'.")
    defs = {k: v for k, v in graphs[0].signature_def.items() if not k.startswith("__")}
    obj = _load_for_inference(path)
    signatures = {k: v for k, v in obj.signatures.items() if k in defs}
    loaded = LoadedVersion(name, version, path, obj, signatures, defs)
    _warm_up(loaded)
    return loaded


def _load_for_inference(path: str) -> Any:
    """`tf.saved_model.load`, minus the custom-gradient registrations it leaves behind.

    Loading registers each of the model's custom gradients in TensorFlow's
    process-wide gradient registry under a fresh `CustomGradient-N` name, and
    nothing removes them: their closures keep every loaded version alive (about
    20 MB per load of a tiny ViT), so each version swap would grow the server.
    Serving computes no gradients, so the registrations this load made are dropped.
    """
    import tensorflow as tf
    from tensorflow.python.framework import ops

    registry = ops._gradient_registry._registry  # private: TensorFlow has no public way to unregister
    before = set(registry)
    obj = tf.saved_model.load(path, tags=["serve"])
    for name in set(registry) - before:
        if name.startswith("CustomGradient-"):
            del registry[name]
    return obj


def _warm_up(loaded: LoadedVersion) -> None:
    """Replays the version's TF Serving warm-up requests; any failure fails the load."""
    import tensorflow as tf

    from keras_vit.export.warmup import read_warmup_requests

    for request in read_warmup_requests(loaded.path):
        signature = request.model_spec.signature_name or "serving_default"
        inputs = {key: tf.make_ndarray(value) for key, value in request.inputs.items()}
        try:
            run_signature(loaded, signature, inputs)
        except ServingError as error:
            raise ValueError(f"Warm-up request for signature {signature!r} failed: {error.message}") from None


def _shape_text(shape) -> str:
    return "[" + ",".join("-1" if d is None else str(d) for d in shape) + "]"


def check_inputs(loaded: LoadedVersion, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validates input names, dtypes and shapes against the signature; returns arrays of the right dtype."""
    if signature not in loaded.signatures:
        raise invalid(
            f'Serving signature name: "{signature}" not found in signature def. Available: {sorted(loaded.signatures)}'
        )
    specs = loaded.input_specs(signature)
    missing, extra = sorted(set(specs) - set(inputs)), sorted(set(inputs) - set(specs))
    if missing or extra:
        raise invalid(f"Signature '{signature}' takes inputs {sorted(specs)}; missing {missing}, unexpected {extra}.")
    checked = {}
    for name, spec in specs.items():
        value = inputs[name]
        want = spec.dtype.as_numpy_dtype
        if spec.dtype.name == "string":
            if value.dtype.kind not in ("O", "S", "U"):
                raise invalid(
                    f"Input '{name}' of signature '{signature}' expects strings (DT_STRING), "
                    f'e.g. {{"b64": "..."}} values; received {value.dtype.name} values.'
                )
        elif value.dtype.kind in ("O", "S", "U"):
            raise invalid(
                f"Input '{name}' of signature '{signature}' expects {spec.dtype.name} numbers; received strings."
            )
        elif value.dtype.kind == "b" and spec.dtype.name != "bool":
            raise invalid(f"Input '{name}' of signature '{signature}' expects {spec.dtype.name}; received booleans.")
        expected = spec.shape.as_list()
        if value.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, value.shape)):
            raise invalid(
                f"Input '{name}' of signature '{signature}' must have shape {_shape_text(expected)}; "
                f"received shape {_shape_text(value.shape)}."
            )
        if value.ndim and value.shape[0] == 0:
            raise invalid(f"Input '{name}' has an empty batch; send at least one example.")
        checked[name] = value if spec.dtype.name == "string" else value.astype(want, copy=False)
    return checked


def run_signature(loaded: LoadedVersion, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs `signature` of a loaded version; errors become `ServingError`s with TF's status code."""
    import tensorflow as tf

    checked = check_inputs(loaded, signature, inputs)
    try:
        outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in checked.items()})
    except tf.errors.OpError as error:
        raise from_op_error(error) from None
    return {name: value.numpy() for name, value in outputs.items()}
