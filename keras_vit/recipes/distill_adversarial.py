"""Recipes that train differently: DeiT distillation and PGD adversarial training.

Each is a `Recipe` subclass whose `training_model` hook wraps the model in
`keras_vit.training.distillation.Distiller` or
`keras_vit.training.adversarial.AdversarialTrainer`, so `keras_vit.recipes.run`
and `prepare` work with them unchanged.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any  # noqa: F401 (Recipe's inherited `Any` field annotations resolve in this module)

import keras

from keras_vit.recipes.config import Recipe
from keras_vit.recipes.library import DEIT_TRAINING
from keras_vit.recipes.registry import register_recipe
from keras_vit.training.adversarial import (
    AdversarialTrainer,
    PixelSpace,
    check_attack_args,
)
from keras_vit.training.distillation import Distiller, check_distillation_args

DEIT_SOURCE = "Touvron et al. 2020, Training data-efficient image transformers, https://arxiv.org/abs/2012.12877"
MADRY_SOURCE = (
    "Madry et al. 2017, Towards Deep Learning Models Resistant to Adversarial Attacks, https://arxiv.org/abs/1706.06083"
)


@dataclasses.dataclass(frozen=True)
class DistillRecipe(Recipe):
    """A `Recipe` trained with DeiT distillation from a frozen teacher.

    Extra settings:
        teacher: a `.keras` model or SavedModel directory that takes the
            student's preprocessed images and predicts the same classes
            (required to run; e.g. the model.keras of an earlier run).
        distill_mode: "hard" or "soft".
        distill_alpha: weight of the distillation term (soft mode).
        distill_temperature: softmax temperature (soft mode).
    """

    teacher: str | None = None
    distill_mode: str = "hard"
    distill_alpha: float = 0.5
    distill_temperature: float = 1.0

    def validate(self) -> None:
        super().validate()
        check_distillation_args(mode=self.distill_mode, alpha=self.distill_alpha, temperature=self.distill_temperature)

    def training_model(self, model: keras.Model, train_data=None) -> keras.Model:
        if not self.teacher:
            raise ValueError(
                f"Recipe {self.name!r} distils from a teacher: pass teacher= (--teacher) with a .keras "
                "model or a SavedModel directory, e.g. the model.keras of a `keras-vit train` run."
            )
        if not os.path.exists(self.teacher):
            raise ValueError(f"Teacher {self.teacher!r} does not exist. Pass a .keras file or SavedModel directory.")
        return Distiller(
            model,
            self.teacher,
            mode=self.distill_mode,
            alpha=self.distill_alpha,
            temperature=self.distill_temperature,
            label_smoothing=self.label_smoothing,
        )


@dataclasses.dataclass(frozen=True)
class AdversarialRecipe(Recipe):
    """A `Recipe` trained on PGD examples (Madry et al.); evaluation reports clean and robust accuracy.

    Extra settings (pixel units of [0, 1] images; the model's mean/std are undone for the attack):
        epsilon: L-infinity radius.
        attack_steps, attack_step_size: PGD steps and step size while training
            (step size None: 2.5 * epsilon / steps).
        eval_attack_steps: PGD steps for the robust accuracy at evaluation.
        clean_weight: weight of the clean loss mixed into training (0: pure PGD training).
    """

    epsilon: float = 8 / 255
    attack_steps: int = 7
    attack_step_size: float | None = 2 / 255
    eval_attack_steps: int = 10
    clean_weight: float = 0.0

    def validate(self) -> None:
        super().validate()
        check_attack_args(self.epsilon, self.attack_steps, self.attack_step_size)
        check_attack_args(self.epsilon, self.eval_attack_steps, None)
        if not 0.0 <= self.clean_weight <= 1.0:
            raise ValueError(f"`clean_weight` must be in [0, 1]. Received: clean_weight={self.clean_weight!r}")

    def training_model(self, model: keras.Model, train_data=None) -> keras.Model:
        from keras_vit.models import model_spec

        spec = model_spec(self.model)
        return AdversarialTrainer(
            model,
            epsilon=self.epsilon,
            steps=self.attack_steps,
            step_size=self.attack_step_size,
            eval_steps=self.eval_attack_steps,
            pixels=PixelSpace(spec.mean, spec.std),
            clean_weight=self.clean_weight,
            label_smoothing=self.label_smoothing,
            seed=self.seed,
        )

    def extra_metrics(self, model: keras.Model, test_data) -> dict[str, float]:
        return {"attack_epsilon": float(self.epsilon), "attack_eval_steps": float(self.eval_attack_steps)}


DEIT_DISTILL = register_recipe(
    DistillRecipe(
        name="deit_distill",
        description="DeiT with hard distillation through the distillation token on ImageNet in the folder layout "
        "(--data_dir with train/ and val/); the DeiT training recipe otherwise. Needs --teacher.",
        source=DEIT_SOURCE + "; section 5.2 and Table 9: hard distillation from a RegNetY-16GF teacher, tau 1, lambda "
        "0.5, same AdamW/augmentation settings as without distillation (DeiT-S distilled: 81.2% top-1)",
        model="deit_small_distilled_patch16_224",
        **DEIT_TRAINING,
        distill_mode="hard",
    )
)

DIGITS_DEIT_DISTILL = register_recipe(
    DistillRecipe(
        name="digits_deit_distill",
        description="Offline distillation: a distilled tiny DeiT (class + distillation token, two heads) on the digits, "
        "hard distillation from a teacher trained with `keras-vit train` (--teacher runs/<run>/model.keras).",
        source=DEIT_SOURCE + " (hard distillation); optimiser settings of the digits_vit recipe",
        model="vit_digits_patch2_8",
        model_overrides={"distillation_token": True},
        dataset="digits",
        crop="resize",
        hflip=False,
        epochs=60,
        batch_size=64,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        warmup_epochs=5,
        drop_path_rate=0.1,
        clip_norm=1.0,
        distill_mode="hard",
    )
)

ADVERSARIAL = register_recipe(
    AdversarialRecipe(
        name="adversarial",
        description="PGD adversarial training of the small CIFAR-10 ViT: PGD-7 examples at L-inf epsilon 8/255, step "
        "2/255, random start; evaluation reports clean accuracy and PGD-10 robust accuracy.",
        source=MADRY_SOURCE + " (CIFAR-10: epsilon 8/255, 7 steps of 2/255 while training); for ViTs see Mo et al. "
        "2022, When Adversarial Training Meets Vision Transformers, https://arxiv.org/abs/2210.07540",
        model="vit_cifar_patch4_32",
        dataset="cifar10",
        crop="pad_crop",
        pad=4,
        hflip=True,
        epochs=40,
        batch_size=128,
        optimizer="adamw",
        lr=5e-4,
        weight_decay=0.05,
        warmup_epochs=5,
        clip_norm=1.0,
        epsilon=8 / 255,
        attack_steps=7,
        attack_step_size=2 / 255,
        eval_attack_steps=10,
    )
)

DIGITS_ADVERSARIAL = register_recipe(
    AdversarialRecipe(
        name="digits_adversarial",
        description="Offline PGD adversarial training on the digits: epsilon 0.1 (of [0, 1] pixels), PGD-3 while "
        "training, PGD-10 robust accuracy at evaluation.",
        source=MADRY_SOURCE + "; optimiser settings of the digits_vit recipe",
        model="vit_digits_patch2_8",
        dataset="digits",
        crop="resize",
        hflip=False,
        epochs=40,
        batch_size=64,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        warmup_epochs=3,
        clip_norm=1.0,
        epsilon=0.1,
        attack_steps=3,
        attack_step_size=None,
        eval_attack_steps=10,
    )
)
