"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays these `PredictionLog` records when it loads a version, so
the first client request does not pay for graph optimisation; `keras-vit
serve` replays them too, and refuses a version whose warm-up fails.
Needs the `serve` extra (`tensorflow-serving-api`) for the protos; without it
no file is written.
"""

from __future__ import annotations

import os

import numpy as np

from keras_vit.export.metadata import ServingMetadata

WARMUP_FILE = "tf_serving_warmup_requests"


def write_warmup_requests(extra_dir: str, meta: ServingMetadata) -> str | None:
    """Writes one mid-grey request per image signature; returns the file, or None without the protos."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError:
        return None
    import tensorflow as tf

    from keras_vit.export.signatures import BYTES_INPUT, BYTES_SIGNATURE, DEFAULT_SIGNATURE, IMAGES_INPUT

    height, width = meta.input_size
    pixels = np.full((1, height, width, meta.num_channels), meta.pixel_scale / 2, np.float32)
    png = tf.io.encode_png(np.full((height, width, meta.num_channels), 128, np.uint8)).numpy()
    path = os.path.join(extra_dir, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        requests = ((DEFAULT_SIGNATURE, IMAGES_INPUT, pixels), (BYTES_SIGNATURE, BYTES_INPUT, [png]))
        for signature, name, value in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = signature
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(version_path: str) -> list:
    """The `PredictRequest`s stored with a version (empty when it has none)."""
    path = os.path.join(version_path, "assets.extra", WARMUP_FILE)
    if not os.path.exists(path):
        return []
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.HasField("predict_log"):
            requests.append(log.predict_log.request)
    return requests
