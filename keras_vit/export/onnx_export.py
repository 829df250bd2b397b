"""ONNX export of the bare model through tf2onnx, and an onnxruntime runner for parity checks.

The graph takes the model's own input `images` (normalised `(batch, height,
width, channels)` float32, batch dynamic) and returns `logits` (or
`features` for a headless model). Our GELU is written with `erf`, which ONNX
has as an operator (TensorFlow's exact `gelu` lowers to `Erfc`, which it has
not). The serving metadata (mean/std/crop/classes) is stored in the file's
`metadata_props` under "keras_vit".
"""

from __future__ import annotations

import os
import uuid

import keras
import numpy as np

from keras_vit.export.metadata import ServingMetadata

DEFAULT_OPSET = 17


def onnx(model: keras.Model, path: str, *, meta: ServingMetadata | None = None, opset: int = DEFAULT_OPSET) -> str:
    """Converts `model` to ONNX, written atomically to `path` (`.onnx`).

    Args:
        model: a Keras model with a static image input size.
        path: target file.
        meta: optional serving metadata recorded in the file's metadata_props.
        opset: ONNX opset. Defaults to 17.

    Returns:
        The absolute path written.
    """
    import tensorflow as tf
    import tf2onnx

    if not str(path).endswith(".onnx"):
        raise ValueError(f"ONNX files end in '.onnx'. Received: path={path!r}")
    shape = tuple(model.input_shape)
    output = "logits" if getattr(getattr(model, "config", None), "num_classes", 1) else "features"
    spec = (tf.TensorSpec([None, *shape[1:]], tf.float32, name="images"),)

    @tf.function(autograph=False)
    def forward(images):
        return {output: tf.cast(model(images, training=False), tf.float32)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    if meta is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "keras_vit", meta.to_json()
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(temp, "wb") as f:
        f.write(proto.SerializeToString())
    os.replace(temp, path)
    return path


def run_onnx(path: str, images: np.ndarray) -> np.ndarray:
    """Runs an exported `.onnx` file with onnxruntime (CPU) on a batch of any size."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.asarray(images, np.float32)})[0]
