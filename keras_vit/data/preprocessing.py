"""Image preprocessing recorded in a model's spec: resize, centre crop, mean/std.

Evaluation follows timm: resize the shorter side to `size / crop_pct`, take
the central `size` crop, normalise with the spec's mean and std. Training crops
come from `TrainCrop` (random-resized crop, pad-and-crop, or plain resize).
Every random op here is stateless and takes an explicit seed, so a pipeline
seeded the same way produces the same images.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import tensorflow as tf

from keras_vit.validation import check_choice

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area", "lanczos3")
CROP_MODES = ("random_resized", "pad_crop", "resize")


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"`{name}` must be a positive int or (height, width). Received: {name}={value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Resize/crop/normalise settings, usually read from a `ModelSpec` with `from_spec`.

    Args:
        image_size: int or (height, width) the model takes.
        mean: per-channel mean of [0, 1] pixels.
        std: per-channel standard deviation of [0, 1] pixels.
        crop_pct: evaluation centre-crop fraction (1.0: resize only).
        interpolation: resize filter, one of `INTERPOLATIONS`.
        num_channels: channels the model takes (1 or 3).
    """

    image_size: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    num_channels: int = 3

    def __post_init__(self):
        object.__setattr__(self, "image_size", _pair(self.image_size, "image_size"))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != self.num_channels or len(self.std) != self.num_channels:
            raise ValueError(
                f"`mean` and `std` need one value per channel ({self.num_channels}). "
                f"Received: mean={self.mean}, std={self.std}"
            )
        if min(self.std) <= 0:
            raise ValueError(f"`std` must be positive. Received: std={self.std}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"`crop_pct` must be in (0, 1]. Received: crop_pct={self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {INTERPOLATIONS}. Received: interpolation={self.interpolation!r}"
            )

    @classmethod
    def from_spec(cls, spec, image_size=None) -> Preprocessing:
        """Settings of a `keras_vit.ModelSpec` (any object with its fields), optionally at another size."""
        interpolation = spec.interpolation if spec.interpolation in INTERPOLATIONS else "bilinear"
        return cls(
            image_size=image_size or tuple(spec.input_size),
            mean=tuple(spec.mean),
            std=tuple(spec.std),
            crop_pct=spec.crop_pct,
            interpolation=interpolation,
            num_channels=int(spec.arch.get("num_channels", len(spec.mean))),
        )

    def resize(self, image: tf.Tensor, size) -> tf.Tensor:
        """Resizes to exactly `size` with this filter, keeping values in [0, 1] (no-op at that size)."""
        if isinstance(size, tuple) and tuple(image.shape[:2]) == size:
            return image
        image = tf.image.resize(image, size, method=self.interpolation, antialias=self.interpolation != "nearest")
        return tf.clip_by_value(image, 0.0, 1.0)

    def eval_crop(self, image: tf.Tensor) -> tf.Tensor:
        """Shorter side to `size / crop_pct` (timm's floor), then the central `size` crop."""
        height, width = self.image_size
        if image.shape[0] == height and image.shape[1] == width and self.crop_pct == 1.0:
            return image
        scale = math.floor(max(height, width) / self.crop_pct)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        ratio = scale / tf.reduce_min(shape)
        new = tf.cast(tf.round(shape * ratio), tf.int32)
        new = tf.maximum(new, [height, width])
        image = self.resize(image, new)
        top, left = (new[0] - height) // 2, (new[1] - width) // 2
        return tf.image.crop_to_bounding_box(image, top, left, height, width)

    def normalize(self, image: tf.Tensor) -> tf.Tensor:
        """`(image - mean) / std` per channel."""
        return (image - tf.constant(self.mean, image.dtype)) / tf.constant(self.std, image.dtype)


@dataclasses.dataclass(frozen=True)
class TrainCrop:
    """Random crop and flip for training.

    Args:
        mode: "random_resized" (Inception crop: area `scale`, aspect `ratio`,
            resized to the model size; ImageNet recipes), "pad_crop" (zero-pad
            `pad` pixels, crop back; small images such as CIFAR and digits), or
            "resize" (no randomness).
        scale: area range of "random_resized". Defaults to (0.08, 1.0).
        ratio: aspect range of "random_resized". Defaults to (3/4, 4/3).
        pad: padding of "pad_crop", in pixels. Defaults to 4.
        hflip: random horizontal flip (off for digits and text).
    """

    mode: str = "random_resized"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    pad: int = 4
    hflip: bool = True

    def __post_init__(self):
        check_choice(self.mode, "mode", CROP_MODES)
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"`scale` must satisfy 0 < min <= max <= 1. Received: scale={self.scale}")
        if self.pad < 0:
            raise ValueError(f"`pad` must be >= 0. Received: pad={self.pad}")

    def __call__(self, image: tf.Tensor, seed: tf.Tensor, preprocessing: Preprocessing) -> tf.Tensor:
        """Crops (and maybe flips) one [0, 1] image to the model size; `seed` is a shape-(2,) int tensor."""
        height, width = preprocessing.image_size
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
        if self.mode == "random_resized":
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.shape(image),
                tf.zeros([1, 0, 4]),
                seed=seeds[0],
                min_object_covered=0.0,
                aspect_ratio_range=self.ratio,
                area_range=self.scale,
                max_attempts=10,
                use_image_if_no_bounding_boxes=True,
            )
            image = preprocessing.resize(tf.slice(image, begin, size), (height, width))
        elif self.mode == "pad_crop":
            image = preprocessing.resize(image, (height, width))
            padded = tf.pad(image, [[self.pad, self.pad], [self.pad, self.pad], [0, 0]])
            image = tf.image.stateless_random_crop(padded, [height, width, tf.shape(image)[2]], seed=seeds[0])
        else:
            image = preprocessing.resize(image, (height, width))
        if self.hflip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return image
