"""The serving signatures of an exported model.

`serving_default`  images: float32 `[batch, height, width, channels]`, pixels in
                   [0, pixel_scale] of any size -> logits, probabilities, top-k
                   classes and scores (and labels when class names are known).
`serve_image_bytes` image_bytes: string `[batch]` of encoded JPEG/PNG (TF
                   Serving's `{"b64": ...}` values) -> the same outputs.
`features`         images as for `serving_default` -> the pooled embedding.

Headless models (no classes) return `features` from the first two as well.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_vit.export.metadata import ServingMetadata
from keras_vit.export.preprocessing import decode_and_preprocess, preprocess

DEFAULT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serve_image_bytes"
FEATURES_SIGNATURE = "features"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
OUTPUT_NAMES = ("logits", "probabilities", "classes", "scores", "labels")


def _feature_model(model: keras.Model) -> keras.Model | None:
    extractor = getattr(model, "feature_extractor", None)
    return extractor() if callable(extractor) else None


def build_archive(model: keras.Model, meta: ServingMetadata) -> keras.export.ExportArchive:
    """An `ExportArchive` tracking `model` with the three serving signatures.

    Args:
        model: the Keras model, taking normalised `(batch, *input_size, channels)` images.
        meta: serving metadata (see `metadata_for_model`).

    Returns:
        The archive, ready for `write_out`.
    """
    features_model = _feature_model(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    if features_model is not None:
        archive.track(features_model)
    names = tf.constant(list(meta.class_names)) if meta.class_names else None
    top_k = meta.effective_top_k

    def answer(inputs):
        if not meta.num_classes:
            return {"features": tf.cast(model(inputs, training=False), tf.float32)}
        logits = tf.cast(model(inputs, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        scores, classes = tf.math.top_k(probabilities, k=top_k)
        outputs = {
            "logits": logits,
            "probabilities": probabilities,
            "classes": tf.cast(classes, tf.int64),
            "scores": scores,
        }
        if names is not None:
            outputs["labels"] = tf.gather(names, classes)
        return outputs

    channels = meta.num_channels
    pixels_spec = tf.TensorSpec([None, None, None, channels], tf.float32, name=IMAGES_INPUT)
    bytes_spec = tf.TensorSpec([None], tf.string, name=BYTES_INPUT)

    def serving_default(images):
        return answer(preprocess(images, meta))

    def serve_image_bytes(image_bytes):
        return answer(decode_and_preprocess(image_bytes, meta))

    archive.add_endpoint(DEFAULT_SIGNATURE, serving_default, input_signature=[pixels_spec])
    archive.add_endpoint(BYTES_SIGNATURE, serve_image_bytes, input_signature=[bytes_spec])
    if features_model is not None:

        def features(images):
            return {"features": tf.cast(features_model(preprocess(images, meta), training=False), tf.float32)}

        archive.add_endpoint(FEATURES_SIGNATURE, features, input_signature=[pixels_spec])
    return archive
