"""DeiT distillation on the digits: a ViT teacher, exported as a SavedModel, teaches a distilled DeiT student.

    python examples/distill_deit.py            # teacher 40 epochs, student 40 epochs (a few minutes on CPU)
    python examples/distill_deit.py --smoke    # under a minute: 2-block teacher, 4 epochs each
    python examples/distill_deit.py --mode soft --temperature 3

The student is a DeiT with class and distillation tokens: its class head learns
the labels, its distillation head the teacher's predictions (hard: arg-max;
soft: tempered distribution), and at inference the two heads are averaged.
The last line says whether teacher and student beat chance on the held-out
digits; the exit status is 1 when they do not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_vit
from keras_vit.training.distillation import Distiller

SPEC = keras_vit.model_spec("vit_digits_patch2_8")


def digits_split(seed: int = 0):
    """Normalised digits, 80/20 split (images in NHWC, labels as ints)."""
    digits = load_digits()
    images = ((digits.images / 16.0 - SPEC.mean[0]) / SPEC.std[0]).astype("float32")[..., None]
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(0.8 * len(images))
    return (images[order[:cut]], digits.target[order[:cut]]), (images[order[cut:]], digits.target[order[cut:]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("hard", "soft"), default="hard")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--smoke", action="store_true", help="a 2-block teacher, 4 epochs each on 768 images")
    args = parser.parse_args()
    (x, y), (x_test, y_test) = digits_split()
    if args.smoke:
        args.epochs, x, y = 4, x[:768], y[:768]
    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = keras_vit.create_model("vit_digits_patch2_8", **(dict(depth=2) if args.smoke else {}))
    teacher.compile(keras.optimizers.AdamW(2e-3), loss, metrics=["accuracy"])
    teacher.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    teacher_accuracy = teacher.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    export_dir = os.path.join(tempfile.mkdtemp(prefix="keras_vit_teacher_"), "teacher")
    teacher.export(export_dir, verbose=False)  # any SavedModel with a serving signature can teach

    student = keras_vit.DeiT(
        image_size=8, patch_size=2, num_channels=1, hidden_dim=32, depth=2, num_heads=2, mlp_dim=64, num_classes=10
    )
    distiller = Distiller(student, export_dir, mode=args.mode, alpha=args.alpha, temperature=args.temperature)
    distiller.compile(keras.optimizers.AdamW(2e-3))
    distiller.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    result = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)
    print(f"teacher ({teacher.count_params():,} params) test accuracy: {teacher_accuracy:.4f}")
    print(
        f"student ({student.count_params():,} params, {args.mode} distillation) test accuracy: {result['accuracy']:.4f}"
    )
    chance = 1.0 / 10
    passed = min(teacher_accuracy, result["accuracy"]) > chance
    print(f"check: teacher and student above chance ({chance:.2f}): {passed}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
