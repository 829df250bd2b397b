"""PGD attacks and PGD adversarial training of a small ViT on the digits, with clean and robust accuracy.

    python examples/adversarial_training.py            # 20 epochs each (a few minutes on CPU)
    python examples/adversarial_training.py --smoke    # seconds: checks the whole path runs

Epsilon is in pixel units of [0, 1] images; the attack undoes the model's
mean/std normalisation, perturbs, clips to the valid range and normalises again.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_vit
from keras_vit.training.adversarial import (
    AdversarialTrainer,
    PixelSpace,
    evaluate_robustness,
)

SPEC = keras_vit.model_spec("vit_digits_patch2_8")
ARCH = dict(image_size=8, patch_size=2, num_channels=1, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64,
            num_classes=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--train_steps", type=int, default=3, help="PGD steps while training")
    parser.add_argument("--eval_steps", type=int, default=10, help="PGD steps of the evaluation attack")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 256 images, 2-step attacks")
    args = parser.parse_args()
    digits = load_digits()
    images = ((digits.images / 16.0 - SPEC.mean[0]) / SPEC.std[0]).astype("float32")[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    x, y = images[order[:1400]], digits.target[order[:1400]]
    x_test, y_test = images[order[1400:]], digits.target[order[1400:]]
    if args.smoke:
        args.epochs, args.train_steps, args.eval_steps, x, y = 1, 2, 2, x[:256], y[:256]
    pixels = PixelSpace(SPEC.mean, SPEC.std)
    attack = dict(epsilon=args.epsilon, steps=args.eval_steps, pixels=pixels)

    keras.utils.set_random_seed(0)
    normal = keras_vit.ViT(**ARCH)
    normal.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    normal.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    fgsm = evaluate_robustness(normal, x_test, y_test, epsilon=args.epsilon, steps=1, step_size=args.epsilon,
                               random_start=False, pixels=pixels)
    before = evaluate_robustness(normal, x_test, y_test, **attack)

    keras.utils.set_random_seed(0)
    robust = keras_vit.ViT(**ARCH)
    trainer = AdversarialTrainer(robust, epsilon=args.epsilon, steps=args.train_steps, eval_steps=args.eval_steps,
                                 pixels=pixels)
    trainer.compile(keras.optimizers.Adam(3e-3))
    trainer.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    after = evaluate_robustness(robust, x_test, y_test, **attack)

    print(f"epsilon {args.epsilon} (pixels in [0, 1]), PGD-{args.eval_steps}")
    print(f"normal training:      clean {before['clean_accuracy']:.4f}  FGSM {fgsm['robust_accuracy']:.4f}  "
          f"PGD {before['robust_accuracy']:.4f}")
    print(f"adversarial training: clean {after['clean_accuracy']:.4f}  PGD {after['robust_accuracy']:.4f}")


if __name__ == "__main__":
    main()
