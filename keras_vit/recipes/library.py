"""The built-in recipes, each with the source its settings come from."""

from __future__ import annotations

import dataclasses
from typing import Any  # noqa: F401 (Recipe's inherited `Any` field annotations resolve in this module)

from keras_vit.recipes.config import Recipe
from keras_vit.recipes.registry import register_recipe

DIGITS_VIT = register_recipe(
    Recipe(
        name="digits_vit",
        description="Offline default: a small ViT on scikit-learn's real 8x8 handwritten digits (fixed held-out 20%). "
        "No random crops (a 1-pixel shift is an eighth of the image and hurt in our runs); light mixup "
        "(alpha 0.2), AdamW, warmup + cosine, stochastic depth; 50 epochs.",
        source="keras_vit; optimiser settings after DeiT (Touvron et al. 2020, https://arxiv.org/abs/2012.12877)",
        model="vit_digits_patch2_8",
        dataset="digits",
        crop="resize",
        hflip=False,
        mixup_alpha=0.2,
        epochs=50,
        batch_size=64,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        warmup_epochs=5,
        drop_path_rate=0.1,
        clip_norm=1.0,
        steps_per_execution=11,
    )
)

CIFAR10_VIT_SCRATCH = register_recipe(
    Recipe(
        name="cifar10_vit_scratch",
        description="A small ViT (patch 4, dim 192, depth 9) trained from scratch on CIFAR-10 with DeiT-style "
        "regularisation; about 90% top-1 is typical after 100-200 epochs.",
        source="Lee, Lee & Song 2021, Vision Transformer for Small-Size Datasets, https://arxiv.org/abs/2112.13492 "
        "(ViT baseline: AdamW 1e-3, wd 0.05, batch 128, 100 epochs, 10 warmup, label smoothing 0.1, "
        "mixup 0.8, cutmix 1.0, random erasing 0.25, stochastic depth 0.1)",
        model="vit_cifar_patch4_32",
        dataset="cifar10",
        crop="pad_crop",
        pad=4,
        hflip=True,
        randaugment_ops=2,
        randaugment_magnitude=0.9,
        random_erasing=0.25,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        switch_prob=0.5,
        epochs=100,
        batch_size=128,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        warmup_epochs=10,
        label_smoothing=0.1,
        drop_path_rate=0.1,
    )
)

# The DeiT ImageNet training settings (Touvron et al. 2020, Table 9), shared with the distillation recipe.
DEIT_TRAINING = dict(
    dataset="folder",
    train_split="train",
    eval_split="val",
    crop="random_resized",
    crop_scale=(0.08, 1.0),
    hflip=True,
    randaugment_ops=2,
    randaugment_magnitude=0.9,
    random_erasing=0.25,
    mixup_alpha=0.8,
    cutmix_alpha=1.0,
    switch_prob=0.5,
    epochs=300,
    batch_size=1024,
    optimizer="adamw",
    lr=5e-4,
    base_batch_size=512,
    weight_decay=0.05,
    warmup_epochs=5,
    warmup_start_lr=1e-6,
    min_lr=1e-5,
    label_smoothing=0.1,
    drop_path_rate=0.1,
)

DEIT_PRETRAIN = register_recipe(
    Recipe(
        name="deit_pretrain",
        description="The DeiT ImageNet-1k recipe (no distillation) on an image folder in the ImageNet layout "
        "(--data_dir with train/ and val/). RandAugment's magnitude noise (mstd 0.5) is not modelled.",
        source="Touvron et al. 2020, Training data-efficient image transformers, https://arxiv.org/abs/2012.12877, "
        "Table 9: AdamW lr 5e-4 x batch/512, wd 0.05, 300 epochs, 5 warmup, cosine, label smoothing 0.1, "
        "mixup 0.8, cutmix 1.0, RandAugment m9, random erasing 0.25, stochastic depth 0.1",
        model="deit_small_patch16_224",
        **DEIT_TRAINING,
    )
)

VIT_FINETUNE = register_recipe(
    Recipe(
        name="vit_finetune",
        description="Fine-tune a pretrained ViT at higher resolution (384) on CIFAR-10: SGD momentum 0.9, no weight "
        "decay, cosine decay, global-norm clipping 1.0. Needs --init (a trained .keras model).",
        source="Dosovitskiy et al. 2020, An Image is Worth 16x16 Words, https://arxiv.org/abs/2010.11929, "
        "Appendix B.1.1: SGD momentum 0.9, batch 512, lr in {0.001..0.03}, cosine, clip 1.0, 10k steps "
        "for CIFAR-10 with 500 warmup, resolution 384",
        model="vit_base_patch16_384",
        image_size=384,
        requires_init=True,
        dataset="cifar10",
        crop="random_resized",
        crop_scale=(0.08, 1.0),
        hflip=True,
        epochs=102,
        batch_size=512,
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=0.0,
        warmup_epochs=5,
        clip_norm=1.0,
    )
)

LINEAR_PROBE = register_recipe(
    Recipe(
        name="linear_probe",
        description="Linear probe: the pretrained backbone frozen, only a new linear head trained. Needs --init.",
        source="Linear evaluation of self-supervised ViTs: Caron et al. 2021 (DINO), https://arxiv.org/abs/2104.14294 "
        "(frozen backbone, linear classifier, SGD momentum 0.9, lr 0.001 x batch/256, no weight decay, cosine)",
        model="vit_base_patch16_224",
        requires_init=True,
        freeze_backbone=True,
        dataset="cifar10",
        crop="random_resized",
        crop_scale=(0.08, 1.0),
        hflip=True,
        epochs=100,
        batch_size=1024,
        optimizer="sgd",
        lr=0.001,
        base_batch_size=256,
        momentum=0.9,
        weight_decay=0.0,
    )
)


# ---- masked-autoencoder pretraining (He et al. 2021) and fine-tuning of its encoder ------------------------------
MAE_SOURCE = "He et al. 2021, Masked Autoencoders Are Scalable Vision Learners, https://arxiv.org/abs/2111.06377"


@dataclasses.dataclass(frozen=True)
class MAEPretrainRecipe(Recipe):
    """A self-supervised `Recipe`: the model is a registered `mae_*` model trained on its own reconstruction loss.

    Labels, when the data set has them, are ignored, so any image source works
    (an image folder needs at least one subfolder, e.g. `root/train/all/*.jpg`).
    The evaluation reports the reconstruction loss on `eval_split`.
    """

    def validate(self) -> None:
        super().validate()
        from keras_vit.models import model_spec

        if model_spec(self.model).family != "mae":
            raise ValueError(
                f"Recipe {self.name!r} pretrains a masked autoencoder: `model` must be a registered MAE "
                f"(keras_vit.list_models('mae_*')). Received: model={self.model!r}"
            )
        if self.freeze_backbone or self.layer_decay not in (None, 1.0):
            raise ValueError("MAE pretraining trains the whole model: set freeze_backbone=False and layer_decay=None.")

    def loss(self):
        return None  # the MAE computes its own loss (`MAE.compute_loss`)

    def metrics(self, num_classes: int) -> list:
        return []


# Table 8 of the paper (and the official PRETRAIN.md): AdamW, base lr 1.5e-4 per 256 images, betas (0.9, 0.95),
# weight decay 0.05, batch 4096, cosine with 40 warmup epochs, 800 epochs, random resized crop (0.2, 1) + flip only,
# 75% masking, per-patch normalised pixel targets (the released models' setting).
MAE_PRETRAIN = register_recipe(
    MAEPretrainRecipe(
        name="mae_pretrain",
        description="Masked-autoencoder pretraining of a ViT on unlabeled images (labels ignored): 75% of the patches "
        "masked, MSE on normalised pixels of the masked ones, random resized crop + flip only.",
        source=MAE_SOURCE + ", Table 8 and github.com/facebookresearch/mae PRETRAIN.md: AdamW lr 1.5e-4 x batch/256, "
        "betas (0.9, 0.95), wd 0.05, batch 4096, 800 epochs, 40 warmup, cosine, RandomResizedCrop(0.2, 1) + flip, "
        "mask ratio 0.75, norm_pix_loss",
        model="mae_vit_base_patch16",
        model_overrides={"mask_ratio": 0.75, "norm_pix_loss": True},
        dataset="folder",
        eval_split="train",
        crop="random_resized",
        crop_scale=(0.2, 1.0),
        hflip=True,
        epochs=800,
        batch_size=4096,
        optimizer="adamw",
        beta_2=0.95,
        lr=1.5e-4,
        base_batch_size=256,
        weight_decay=0.05,
        warmup_epochs=40,
    )
)

# Table 9 and FINETUNE.md (ViT-B): AdamW, base lr 5e-4 per 256 images, layer decay 0.65 (ViT-L: lr 1e-3, decay
# 0.75, 50 epochs), wd 0.05, batch 1024, 100 epochs, 5 warmup, RandAugment (9, 0.5), random erasing 0.25, mixup 0.8,
# cutmix 1.0, label smoothing 0.1, drop path 0.1, global average pooling with fc_norm.
MAE_FINETUNE = register_recipe(
    Recipe(
        name="mae_finetune",
        description="Fine-tune an MAE-pretrained encoder (--init: the model.keras of an mae_pretrain run) as a "
        "classifier with global average pooling + fc_norm, layer-wise lr decay 0.65 (ViT-B; use 0.75 for ViT-L), "
        "drop path 0.1, mixup/cutmix, label smoothing. Set `model` to the MAE's encoder variant.",
        source=MAE_SOURCE + ", Table 9 and github.com/facebookresearch/mae FINETUNE.md: AdamW lr 5e-4 x batch/256 "
        "(ViT-B; 1e-3 for ViT-L), layer decay 0.65 (B) / 0.75 (L), wd 0.05, batch 1024, 100 epochs (B), 5 warmup, "
        "RandAug (9, 0.5), random erasing 0.25, mixup 0.8, cutmix 1.0, label smoothing 0.1, drop path 0.1",
        model="vit_base_patch16_224",
        model_overrides={"pooling": "gap"},
        requires_init=True,
        dataset="folder",
        train_split="train",
        eval_split="val",
        crop="random_resized",
        crop_scale=(0.08, 1.0),
        hflip=True,
        randaugment_ops=2,
        randaugment_magnitude=0.9,
        random_erasing=0.25,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        switch_prob=0.5,
        epochs=100,
        batch_size=1024,
        optimizer="adamw",
        lr=5e-4,
        base_batch_size=256,
        weight_decay=0.05,
        warmup_epochs=5,
        label_smoothing=0.1,
        drop_path_rate=0.1,
        layer_decay=0.65,
    )
)
