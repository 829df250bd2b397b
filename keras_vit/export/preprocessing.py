"""In-graph evaluation preprocessing: decode, resize, centre-crop, normalise.

Mirrors timm's evaluation transform (`Resize(size / crop_pct)` on the shorter
side, `CenterCrop(size)`, `Normalize(mean, std)`) with TensorFlow ops, so a
SavedModel takes raw pixels of any size and TF Serving clients need no
preprocessing code of their own. Down-sizing is antialiased like PIL's.
"""

from __future__ import annotations

import tensorflow as tf

from keras_vit.export.metadata import ServingMetadata

_METHODS = {
    "bicubic": tf.image.ResizeMethod.BICUBIC,
    "bilinear": tf.image.ResizeMethod.BILINEAR,
    "nearest": tf.image.ResizeMethod.NEAREST_NEIGHBOR,
    "area": tf.image.ResizeMethod.AREA,
    "lanczos3": tf.image.ResizeMethod.LANCZOS3,
}


def _resized_shape(height: tf.Tensor, width: tf.Tensor, meta: ServingMetadata) -> tuple[tf.Tensor, tf.Tensor]:
    """Size after the resize step (torchvision's rule: the shorter side gets `resize_size`)."""
    size = meta.resize_size
    if not isinstance(size, int):
        return tf.constant(size[0]), tf.constant(size[1])
    h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    short, long = tf.minimum(h, w), tf.maximum(h, w)
    new_long = tf.cast(tf.math.floor(size * long / short), tf.int32)  # int() truncation, as torchvision
    new_short = tf.constant(size, tf.int32)
    return tf.cond(h <= w, lambda: (new_short, new_long), lambda: (new_long, new_short))


def resize_and_crop(images: tf.Tensor, meta: ServingMetadata) -> tf.Tensor:
    """Resizes a batch of same-size float images and takes the centre crop `meta.input_size`.

    Args:
        images: float32 `(batch, height, width, channels)`, values in [0, pixel_scale].
        meta: the model's serving metadata.

    Returns:
        float32 `(batch, *input_size, channels)` in [0, pixel_scale].
    """
    target_h, target_w = meta.input_size
    shape = tf.shape(images)
    new_h, new_w = _resized_shape(shape[1], shape[2], meta)
    resized = tf.image.resize(images, tf.stack([new_h, new_w]), method=_METHODS[meta.interpolation], antialias=True)
    # Round-half-to-even offsets, as torchvision's center_crop (int(round(...))).
    top = tf.cast(tf.round(tf.cast(new_h - target_h, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - target_w, tf.float32) / 2.0), tf.int32)
    cropped = resized[:, top : top + target_h, left : left + target_w, :]
    if meta.interpolation in ("bicubic", "lanczos3"):  # overshoot beyond the pixel range, clipped as PIL does
        cropped = tf.clip_by_value(cropped, 0.0, meta.pixel_scale)
    return tf.ensure_shape(cropped, [None, target_h, target_w, meta.num_channels])


def normalize(images: tf.Tensor, meta: ServingMetadata) -> tf.Tensor:
    """Scales pixels to [0, 1] and applies the per-channel mean/std."""
    mean = tf.constant(meta.mean, tf.float32)
    std = tf.constant(meta.std, tf.float32)
    return (images / meta.pixel_scale - mean) / std


def preprocess(images: tf.Tensor, meta: ServingMetadata) -> tf.Tensor:
    """Raw pixels of any size -> the normalised model input (resize, crop, normalise)."""
    images = tf.convert_to_tensor(images, tf.float32)
    return normalize(resize_and_crop(images, meta), meta)


def decode_and_preprocess(encoded: tf.Tensor, meta: ServingMetadata) -> tf.Tensor:
    """A batch of encoded JPEG/PNG/GIF/BMP strings -> the normalised model input.

    Each image is decoded and resized on its own (sizes may differ), then stacked.
    JPEGs decode exactly as PIL decodes them (accurate integer DCT).
    """

    def one(data):
        # JPEG with the accurate integer DCT (TF's default is the fast one, up to 18 levels off PIL/libjpeg's
        # default); the other formats through decode_image.
        image = tf.cond(
            tf.io.is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=meta.num_channels, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=meta.num_channels, expand_animations=False),
        )
        image = tf.cast(image, tf.float32) * (meta.pixel_scale / 255.0)
        return resize_and_crop(image[None], meta)[0]

    target = tf.TensorSpec([*meta.input_size, meta.num_channels], tf.float32)
    pixels = tf.map_fn(one, encoded, fn_output_signature=target)
    return normalize(pixels, meta)
