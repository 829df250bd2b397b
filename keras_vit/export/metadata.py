"""Preprocessing and label metadata that travels with an exported model.

A SavedModel's serving signatures take raw pixels, so everything the model
expects of its input (size, mean/std, crop, resize filter) must be known at
export time. For zoo models it comes from `keras_vit.model_spec`; for other
models from explicit arguments. The same record is written next to the
SavedModel (`assets.extra/keras_vit.json`) so tools can read it back.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Sequence
from typing import Any

from keras_vit.validation import check_positive_int

INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "area", "lanczos3")
METADATA_FILE = "keras_vit.json"


@dataclasses.dataclass(frozen=True)
class ServingMetadata:
    """What the serving graph needs to turn pixels into model inputs, and logits into answers.

    Attributes:
        input_size: (height, width) the model takes.
        num_channels: channels of the model input (3 for RGB, 1 for grey).
        mean, std: per-channel normalisation of pixels scaled to [0, 1].
        crop_pct: centre-crop fraction (timm's evaluation transform: resize the
            shorter side to `size / crop_pct`, then crop `size`). 1.0 resizes
            straight to the crop.
        interpolation: resize filter, one of `INTERPOLATIONS`.
        pixel_scale: value of a full-intensity pixel in the inputs (255 for 8-bit images).
        class_names: optional names of the classes, index-aligned with the logits.
        top_k: number of classes returned by the `classes`/`scores`/`labels` outputs.
        num_classes: classes of the head; 0 for a headless backbone.
        model_name: name recorded for users and the server.
    """

    input_size: tuple[int, int]
    num_channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    pixel_scale: float = 255.0
    class_names: tuple[str, ...] | None = None
    top_k: int = 5
    num_classes: int = 0
    model_name: str = "model"

    def __post_init__(self):
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(v) for v in self.class_names))
        self.validate()

    def validate(self) -> None:
        """Raises `ValueError` naming the bad value and the fix."""
        if len(self.input_size) != 2 or min(self.input_size) <= 0:
            raise ValueError(
                f"`input_size` must be two positive ints (height, width). Received: input_size={self.input_size}"
            )
        for field in ("mean", "std"):
            values = getattr(self, field)
            if len(values) not in (1, self.num_channels):
                raise ValueError(
                    f"`{field}` needs 1 or num_channels={self.num_channels} values. Received: {field}={values}"
                )
        if min(self.std) <= 0:
            raise ValueError(f"`std` must be positive. Received: std={self.std}")
        if not (0 < self.crop_pct <= 1):
            raise ValueError(f"`crop_pct` must be in (0, 1]; 1.0 means no crop. Received: crop_pct={self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {INTERPOLATIONS}. Received: interpolation={self.interpolation!r}"
            )
        if not self.pixel_scale > 0:
            raise ValueError(
                f"`pixel_scale` must be positive (255 for 8-bit images). Received: pixel_scale={self.pixel_scale}"
            )
        if self.num_channels not in (1, 3, 4):
            raise ValueError(
                f"`num_channels` must be 1, 3 or 4 to decode images. Received: num_channels={self.num_channels}"
            )
        check_positive_int(self.top_k, "top_k")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"`class_names` must name every one of the model's {self.num_classes} classes. "
                f"Received {len(self.class_names)} names."
            )

    @property
    def resize_size(self) -> tuple[int, int] | int:
        """Size before the centre crop: the shorter side for square inputs, else (height, width)."""
        height, width = self.input_size
        if height == width:
            return int(math.floor(height / self.crop_pct))
        return (int(math.floor(height / self.crop_pct)), int(math.floor(width / self.crop_pct)))

    @property
    def effective_top_k(self) -> int:
        return min(self.top_k, self.num_classes) if self.num_classes else 0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_size"] = list(self.input_size)
        data["class_names"] = list(self.class_names) if self.class_names is not None else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingMetadata:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def metadata_for_model(
    model,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    pixel_scale: float = 255.0,
    class_names: Sequence[str] | None = None,
    top_k: int = 5,
    name: str | None = None,
) -> ServingMetadata:
    """Collects a model's serving metadata: zoo spec first, explicit arguments override.

    Args:
        model: a Keras model with a static `(batch, height, width, channels)` input, or a keras_vit
            model taking any size (served at its `config.image_size`).
        mean, std, crop_pct, interpolation: preprocessing; taken from the model's
            registered spec when it was built by name, else `mean` and `std` are required.
        pixel_scale: value of a white pixel in the inputs clients send.
        class_names: names for the `labels` output, one per class.
        top_k: how many classes the top-k outputs return.
        name: model name to record. Defaults to the variant name or `model.name`.

    Returns:
        A validated `ServingMetadata`.
    """
    shape = tuple(model.input_shape)
    config_size = getattr(getattr(model, "config", None), "image_size", None)
    if len(shape) == 4 and None in shape[1:3] and config_size is not None:
        # A model taking any image size (dynamic_image_size) is served at the size it was built for.
        shape = (shape[0], *config_size, shape[3])
    if len(shape) != 4 or None in shape[1:]:
        raise ValueError(
            f"Export needs a model with a static (batch, height, width, channels) image input. "
            f"Received: input_shape={shape}"
        )
    spec = _registered_spec(model)
    if spec is None and (mean is None or std is None):
        raise ValueError(
            f"Model {model.name!r} is not built from the keras_vit registry, so its preprocessing is "
            f"unknown. Pass `mean` and `std` (per channel, for pixels in [0, 1]) and optionally "
            f"`crop_pct`. Received: mean={mean}, std={std}"
        )
    output_shape = model.output_shape
    num_classes = int(output_shape[-1]) if getattr(getattr(model, "config", None), "num_classes", 1) else 0
    return ServingMetadata(
        input_size=shape[1:3],
        num_channels=int(shape[3]),
        mean=tuple(mean if mean is not None else spec.mean),
        std=tuple(std if std is not None else spec.std),
        crop_pct=float(crop_pct if crop_pct is not None else (spec.crop_pct if spec else 1.0)),
        interpolation=interpolation or (spec.interpolation if spec else "bicubic"),
        pixel_scale=float(pixel_scale),
        class_names=tuple(class_names) if class_names is not None else None,
        top_k=top_k,
        num_classes=num_classes,
        model_name=name or getattr(model, "variant", None) or model.name,
    )


def check_options(options: dict[str, Any], function, caller: str, exclude: Sequence[str] = ()) -> None:
    """Rejects keyword options that `function` does not take, as a call of `caller` would.

    Raises:
        TypeError: naming the unknown options and the valid ones.
    """
    valid = [name for name in inspect.signature(function).parameters if name not in exclude]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword argument(s) {unknown}. Valid: {valid}")


def _registered_spec(model):
    variant = getattr(model, "variant", None)
    if not variant:
        return None
    from keras_vit.models import model_spec

    try:
        return model_spec(variant)
    except ValueError:
        return None
