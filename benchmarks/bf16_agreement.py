"""How far bfloat16 inference lands from float32: top-1 agreement and the largest logit difference.

    python -m benchmarks.bf16_agreement [--skip-digits]

Two comparisons, each of a float32 model against `keras_vit.models.inference_copy(model, "bfloat16")`
(weights stored in bfloat16) and against the same model under the `mixed_bfloat16` policy:

- photos: the real photographs shipped offline with scikit-image (`skimage.data`:
  astronaut, coffee, chelsea, rocket, ...) and scikit-learn (`load_sample_images`),
  each as 9 crops (full image and a 3x3 grid of half-size crops, each mirrored
  too), resized to 224, through ViT-S/16 with its initial weights (no
  pretrained checkpoint is available offline) and a head initialized like its
  other dense layers (the default head starts at zero, which would make every
  logit 0);
- digits: the model the default recipe (`keras-vit train`, `digits_vit`)
  trains, on the real scikit-learn digits test split.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "cat",
    "immunohistochemistry",
    "hubble_deep_field",
    "motorcycle_left",
)


def photographs(size: int = 224) -> np.ndarray:
    """The offline photos, 18 views each (9 crops, each also mirrored), resized to `size`, values in [0, 1]."""
    import tensorflow as tf
    from skimage import data
    from sklearn.datasets import load_sample_images

    images = [getattr(data, name)() for name in PHOTOS if hasattr(data, name)]
    images += list(load_sample_images().images)
    views = []
    for image in images:
        image = np.asarray(image, "float32")[..., :3] / 255.0
        h, w = image.shape[:2]
        crops = [image] + [
            image[i * h // 4 : i * h // 4 + h // 2, j * w // 4 : j * w // 4 + w // 2]
            for i in range(3)
            for j in range(3)
        ]
        for crop in crops[:9]:
            resized = tf.image.resize(crop, (size, size), antialias=True).numpy()
            views += [resized, resized[:, ::-1]]
    return np.clip(np.stack(views), 0.0, 1.0)


def compare(reference: np.ndarray, other: np.ndarray) -> dict:
    """Top-1 agreement and the largest absolute logit difference between two `(n, classes)` logit arrays."""
    agree = float(np.mean(reference.argmax(-1) == other.argmax(-1)))
    return dict(n=len(reference), top1_agreement=agree, max_logit_diff=float(np.abs(reference - other).max()))


def bf16_variants(model, images: np.ndarray, batch_size: int = 16) -> dict:
    """Logits of `model` (float32) and of its two bfloat16 forms on `images`."""
    from keras_vit.models import inference_copy

    logits = {"float32": model.predict(images, batch_size=batch_size, verbose=0)}
    logits["inference_copy(bfloat16)"] = inference_copy(model, "bfloat16").predict(
        images, batch_size=batch_size, verbose=0
    )
    mixed = type(model).from_config(dict(model.get_config(), dtype="mixed_bfloat16"))
    mixed.set_weights(model.get_weights())
    logits["mixed_bfloat16"] = mixed.predict(images, batch_size=batch_size, verbose=0)
    return logits


def photos_case() -> dict:
    import keras

    import keras_vit

    keras.utils.set_random_seed(0)
    model = keras_vit.ViT("vit_small_patch16_224")
    head = model.get_layer("head")
    head.kernel.assign(keras.initializers.TruncatedNormal(stddev=0.02, seed=1)(head.kernel.shape))
    spec = keras_vit.model_spec("vit_small_patch16_224")
    mean, std = np.asarray(spec.mean, "float32"), np.asarray(spec.std, "float32")
    images = (photographs() - mean) / std
    return _compared(bf16_variants(model, images))


def digits_case() -> dict:
    from keras_vit import recipes

    prepared = recipes.prepare("digits_vit")
    result = recipes.fit_prepared(prepared)
    images = np.concatenate([x.numpy() for x, _ in prepared.test_data])
    compared = _compared(bf16_variants(result.model, images))
    compared["float32 test accuracy"] = result.metrics.get("test_accuracy")
    return compared


def _compared(logits: dict) -> dict:
    reference = logits.pop("float32")
    return {name: compare(reference, other) for name, other in logits.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-digits", action="store_true", help="only the photos (the digits case trains a model)")
    args = parser.parse_args(argv)
    cases = {"photos, ViT-S/16 initial weights": photos_case}
    if not args.skip_digits:
        cases["digits test split, digits_vit default recipe"] = digits_case
    for name, case in cases.items():
        print(f"## {name}")
        for variant, row in case().items():
            print(f"- {variant}: {row}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
