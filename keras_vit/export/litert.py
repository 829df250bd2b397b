"""LiteRT (`.tflite`) export of the bare model, and a runner for parity checks.

The file takes the model's own input (normalised `(batch, height, width,
channels)` float32, batch dynamic) and returns its logits (or features); the
preprocessing to apply first is in `keras_vit.export.metadata_for_model`.
Converted with TensorFlow's `TFLiteConverter`, run with the `ai_edge_litert`
interpreter (TensorFlow's own `tf.lite.Interpreter` when that is missing).
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid

import keras
import numpy as np


def litert(model: keras.Model, path: str) -> str:
    """Converts `model` to a LiteRT flatbuffer written atomically to `path` (`.tflite`).

    Returns:
        The absolute path written.
    """
    import tensorflow as tf

    if not str(path).endswith(".tflite"):
        raise ValueError(f"LiteRT files end in '.tflite'. Received: path={path!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)  # freezes variables into constants
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its temporary export's summary
        flatbuffer = converter.convert()
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(temp, "wb") as f:
        f.write(flatbuffer)
    os.replace(temp, path)
    return path


def _interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the extra is missing: TensorFlow still ships one
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=path)


def run_litert(path: str, images: np.ndarray) -> np.ndarray:
    """Runs a `.tflite` file on a batch of any size (the input is resized to it)."""
    interpreter = _interpreter(path)
    detail = interpreter.get_input_details()[0]
    images = np.asarray(images, dtype=detail["dtype"])
    interpreter.resize_tensor_input(detail["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
