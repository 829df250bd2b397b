"""PGD attacks and PGD adversarial training of a small ViT on the digits, with clean and robust accuracy.

    python examples/adversarial_training.py            # 20 epochs each (a few minutes on CPU)
    python examples/adversarial_training.py --smoke    # under a minute: 4 epochs at epsilon 0.05

Epsilon is in pixel units of [0, 1] images; the attack undoes the model's
mean/std normalisation, perturbs, clips to the valid range and normalises again.
The last line says whether both models beat chance on clean images, no attack
raised accuracy, and adversarial training raised PGD accuracy; the exit status
is 1 when any of these fails.
"""

from __future__ import annotations

import argparse
import os
import sys

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
ARCH = dict(image_size=8, patch_size=2, num_channels=1, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epsilon", type=float, default=None, help="L-inf radius (default 0.1; 0.05 with --smoke)")
    parser.add_argument("--train_steps", type=int, default=3, help="PGD steps while training")
    parser.add_argument("--eval_steps", type=int, default=10, help="PGD steps of the evaluation attack")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="4 epochs on 768 images, 2-step attacks")
    args = parser.parse_args()
    digits = load_digits()
    images = ((digits.images / 16.0 - SPEC.mean[0]) / SPEC.std[0]).astype("float32")[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    x, y = images[order[:1400]], digits.target[order[:1400]]
    x_test, y_test = images[order[1400:]], digits.target[order[1400:]]
    if args.epsilon is None:
        args.epsilon = 0.05 if args.smoke else 0.1
    if args.smoke:
        args.epochs, args.train_steps, args.eval_steps, x, y = 4, 2, 2, x[:768], y[:768]
    pixels = PixelSpace(SPEC.mean, SPEC.std)
    attack = dict(epsilon=args.epsilon, steps=args.eval_steps, pixels=pixels)

    keras.utils.set_random_seed(0)
    normal = keras_vit.ViT(**ARCH)
    normal.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    normal.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    fgsm = evaluate_robustness(
        normal, x_test, y_test, epsilon=args.epsilon, steps=1, step_size=args.epsilon, random_start=False, pixels=pixels
    )
    before = evaluate_robustness(normal, x_test, y_test, **attack)

    keras.utils.set_random_seed(0)
    robust = keras_vit.ViT(**ARCH)
    trainer = AdversarialTrainer(
        robust, epsilon=args.epsilon, steps=args.train_steps, eval_steps=args.eval_steps, pixels=pixels
    )
    trainer.compile(keras.optimizers.Adam(3e-3))
    trainer.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    after = evaluate_robustness(robust, x_test, y_test, **attack)

    print(f"epsilon {args.epsilon} (pixels in [0, 1]), PGD-{args.eval_steps}")
    print(
        f"normal training:      clean {before['clean_accuracy']:.4f}  FGSM {fgsm['robust_accuracy']:.4f}  "
        f"PGD {before['robust_accuracy']:.4f}"
    )
    print(f"adversarial training: clean {after['clean_accuracy']:.4f}  PGD {after['robust_accuracy']:.4f}")
    # The script's own check: both models learned (clean accuracy above chance), no attack helped them, and
    # adversarial training made the model more robust to the same PGD attack.
    chance = 1.0 / ARCH["num_classes"]
    learned = min(before["clean_accuracy"], after["clean_accuracy"]) > chance
    attacks_hurt = (
        fgsm["robust_accuracy"] <= before["clean_accuracy"]
        and before["robust_accuracy"] <= before["clean_accuracy"]
        and after["robust_accuracy"] <= after["clean_accuracy"]
    )
    more_robust = after["robust_accuracy"] > before["robust_accuracy"]
    print(
        f"check: clean accuracy above chance ({chance:.2f}): {learned}; attacks never help: {attacks_hurt}; "
        f"PGD accuracy {before['robust_accuracy']:.4f} -> {after['robust_accuracy']:.4f} (more robust: "
        f"{more_robust})"
    )
    return 0 if learned and attacks_hurt and more_robust else 1


if __name__ == "__main__":
    sys.exit(main())
