"""Every built-in variant of the zoo, as data: one table per family, registered the same way at the bottom.

Names follow timm. Preprocessing facts: the original ViT/AugReg weights use
mean = std = 0.5 and a 0.9 crop at 224 (1.0 at 384); DeiT uses the ImageNet
mean/std and a 0.875 crop (Touvron et al. 2020); DINOv2 uses ImageNet mean/std.
The sequence Transformer's variants follow Vaswani et al. 2017, table 3.
"""

from __future__ import annotations

import dataclasses

from keras_vit.models.mae import DECODER_DEFAULTS, MAE, MAE_SOURCE, encoder_config, mae_param_count
from keras_vit.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    ModelSpec,
    register_variants,
)
from keras_vit.models.timm_vit_variants import TIMM_VIT_VARIANTS
from keras_vit.models.transformer import Transformer, TransformerConfig, transformer_param_count
from keras_vit.models.vit import DeiT, ViT, ViTConfig, missing_layers, vit_param_count

# (hidden_dim, depth, num_heads); MLP is 4x hidden_dim (ViT paper, table 1; Ti and S from DeiT).
VIT_SIZES = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}
VIT_SOURCE = "Dosovitskiy et al. 2020, https://arxiv.org/abs/2010.11929; AugReg, https://arxiv.org/abs/2106.10270"
DEIT_SOURCE = "Touvron et al. 2020, https://arxiv.org/abs/2012.12877"
REG_SOURCE = "Darcet et al. 2023 (registers), https://arxiv.org/abs/2309.16588"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _arch(size: str, patch: int, image: int, **extra) -> dict:
    dim, depth, heads = VIT_SIZES[size]
    return dict(
        image_size=image, patch_size=patch, hidden_dim=dim, depth=depth, num_heads=heads, mlp_dim=4 * dim, **extra
    )


def _vit_specs() -> list[ModelSpec]:
    specs = []
    for size in VIT_SIZES:
        for patch in (8, 14, 16, 32):
            for image in (224, 384):
                if image % patch:
                    continue
                if image == 384 and patch in (8, 14):
                    continue
                specs.append(
                    ModelSpec(
                        name=f"vit_{size}_patch{patch}_{image}",
                        family="vit",
                        arch=_arch(size, patch, image),
                        input_size=(image, image),
                        mean=INCEPTION_MEAN,
                        std=INCEPTION_STD,
                        crop_pct=0.9 if image == 224 else 1.0,
                        source=VIT_SOURCE,
                        license="Apache-2.0",
                    )
                )
    return specs


def _deit_specs() -> list[ModelSpec]:
    specs = []
    for size in ("tiny", "small", "base"):
        for image in (224, 384):
            if image == 384 and size != "base":
                continue
            for distilled in (False, True):
                name = f"deit_{size}{'_distilled' if distilled else ''}_patch16_{image}"
                specs.append(
                    ModelSpec(
                        name=name,
                        family="deit",
                        arch=_arch(size, 16, image, distillation_token=distilled),
                        input_size=(image, image),
                        mean=IMAGENET_MEAN,
                        std=IMAGENET_STD,
                        crop_pct=0.875 if image == 224 else 1.0,
                        source=DEIT_SOURCE,
                        license="Apache-2.0",
                    )
                )
    return specs


def _register_token_specs() -> list[ModelSpec]:
    dinov2 = dict(layer_scale_init=1e-5, num_register_tokens=4, pos_embed_prefix=False)
    gap = dict(class_token=False, pos_embed_prefix=False, pooling="gap", num_register_tokens=4)
    return [
        ModelSpec(
            name=f"vit_{size}_patch14_reg4_dinov2",
            family="vit",
            arch=_arch(size, 14, 518, num_classes=0, **dinov2),
            input_size=(518, 518),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            crop_pct=1.0,
            num_classes=0,
            source="DINOv2 with registers, " + REG_SOURCE,
            license="Apache-2.0",
        )
        for size in ("small", "base")
    ] + [
        ModelSpec(
            name="vit_base_patch16_reg4_gap_256",
            family="vit",
            arch=_arch("base", 16, 256, **gap),
            input_size=(256, 256),
            mean=INCEPTION_MEAN,
            std=INCEPTION_STD,
            crop_pct=0.95,
            source="timm, " + REG_SOURCE,
            license="Apache-2.0",
        ),
    ]


def _small_image_specs() -> list[ModelSpec]:
    cifar = dict(
        input_size=(32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_pct=1.0, num_classes=10, license="Apache-2.0"
    )
    return [
        # Patch 4, dim 192, depth 9, 12 heads, MLP 384: a common from-scratch CIFAR-10 ViT.
        ModelSpec(
            name="vit_cifar_patch4_32",
            family="vit",
            arch=dict(image_size=32, patch_size=4, hidden_dim=192, depth=9, num_heads=12, mlp_dim=384, num_classes=10),
            source="small-data ViT from scratch; cf. Lee et al. 2021, https://arxiv.org/abs/2112.13492",
            **cifar,
        ),
        # ViT-Lite-7/4 of Hassani et al. 2021 (dim 256, depth 7, 4 heads, MLP 512).
        ModelSpec(
            name="vit_lite7_patch4_32",
            family="vit",
            arch=dict(image_size=32, patch_size=4, hidden_dim=256, depth=7, num_heads=4, mlp_dim=512, num_classes=10),
            source="ViT-Lite-7/4, Hassani et al. 2021, https://arxiv.org/abs/2104.05704",
            **cifar,
        ),
        # For the 8x8 grey digits of scikit-learn (the offline default recipe).
        ModelSpec(
            name="vit_digits_patch2_8",
            family="vit",
            arch=dict(
                image_size=8,
                patch_size=2,
                num_channels=1,
                hidden_dim=64,
                depth=4,
                num_heads=4,
                mlp_dim=128,
                num_classes=10,
            ),
            # mean/std: pixel statistics (of [0, 1] pixels) of keras_vit.data's fixed digits training split
            input_size=(8, 8),
            mean=(0.3054,),
            std=(0.3761,),
            crop_pct=1.0,
            num_classes=10,
            source="keras_vit default recipe (scikit-learn digits)",
            license="Apache-2.0",
        ),
    ]


def _timm_specs(hand_written: list[ModelSpec]) -> list[ModelSpec]:
    """timm's vision_transformer.py and deit.py names (tools/timm_vit_variants.py), with timm's pretrained defaults.

    A name the tables above already define keeps their spec (a test checks that
    both agree). Names whose options the installed layers cannot build yet are
    left out, so that every registered name builds.
    """
    taken = {spec.name for spec in hand_written}
    specs = []
    for name, row in TIMM_VIT_VARIANTS.items():
        if name in taken or missing_layers(ViTConfig(**row["arch"])):
            continue
        fields = {key: value for key, value in row.items() if key != "pretrained_tag"}
        specs.append(ModelSpec(name=name, **fields))
    return specs


def _vit_family_specs() -> list[ModelSpec]:
    hand_written = _vit_specs() + _deit_specs() + _register_token_specs() + _small_image_specs()
    return hand_written + _timm_specs(hand_written)


# ---- the sequence Transformer ------------------------------------------------------------------
TRANSFORMER_SOURCE = "Vaswani et al. 2017, https://arxiv.org/abs/1706.03762"
# The paper shares one BPE vocabulary (about 37000 tokens for English-German) between source,
# target and the pre-softmax projection (section 3.4).
_SHARED_VOCABULARY = dict(vocab_size=37000, share_embeddings=True, tie_output=True)
TRANSFORMER_VARIANTS = {
    "transformer_base": dict(
        hidden_dim=512,
        num_encoder_layers=6,
        num_decoder_layers=6,
        num_heads=8,
        mlp_dim=2048,
        dropout_rate=0.1,
        **_SHARED_VOCABULARY,
    ),
    "transformer_big": dict(
        hidden_dim=1024,
        num_encoder_layers=6,
        num_decoder_layers=6,
        num_heads=16,
        mlp_dim=4096,
        dropout_rate=0.3,
        **_SHARED_VOCABULARY,
    ),
    # Tiny variants for tests and the digit-string example (vocabulary: pad, start, end, 10 digits, 3 spare).
    "transformer_tiny": dict(
        vocab_size=16,
        share_embeddings=True,
        hidden_dim=32,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        mlp_dim=64,
        dropout_rate=0.0,
        max_length=64,
    ),
    "transformer_encoder_tiny": dict(
        vocab_size=16,
        hidden_dim=32,
        num_encoder_layers=2,
        num_decoder_layers=0,
        num_heads=4,
        mlp_dim=64,
        dropout_rate=0.0,
        max_length=64,
    ),
}


def _transformer_specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=name,
            family="transformer",
            arch=arch,
            input_size=(),  # token ids, no images
            mean=(),
            std=(),
            crop_pct=1.0,
            interpolation="none",
            num_classes=TransformerConfig(**arch).output_vocab_size,
            source=TRANSFORMER_SOURCE if not name.endswith("tiny") else "keras_vit tests and examples",
            license="Apache-2.0",
        )
        for name, arch in TRANSFORMER_VARIANTS.items()
    ]


def _mae_specs() -> list[ModelSpec]:
    """The MAE paper's models (decoder 512 x 8 x 16) and a tiny one for the digits; preprocessing as the encoder's."""
    table = {
        "mae_vit_base_patch16": ("vit_base_patch16_224", {}),
        "mae_vit_large_patch16": ("vit_large_patch16_224", {}),
        "mae_vit_huge_patch14": ("vit_huge_patch14_224", {}),
        "mae_vit_digits_patch2_8": ("vit_digits_patch2_8", dict(decoder_dim=32, decoder_depth=2, decoder_heads=4)),
    }
    encoders = {spec.name: spec for spec in _vit_specs() + _small_image_specs()}
    # The released MAE weights (timm's `*.mae` tags) take ImageNet mean/std, a 0.9 crop, and are CC-BY-NC-4.0.
    paper = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.9, license="CC-BY-NC-4.0")
    return [
        dataclasses.replace(
            encoders[encoder],
            name=name,
            family="mae",
            arch=dict(DECODER_DEFAULTS, encoder=encoder, **decoder),
            num_classes=0,
            source=f"{MAE_SOURCE}; encoder {encoder}",
            **(paper if name != "mae_vit_digits_patch2_8" else dict(license="")),
        )
        for name, (encoder, decoder) in table.items()
    ]


def _mae_param_count(arch: dict) -> int:
    config = encoder_config(arch["encoder"], {})
    return mae_param_count(config, arch["decoder_dim"], arch["decoder_depth"], 4 * arch["decoder_dim"])


# ---- registration: one call per family ---------------------------------------------------------
register_variants(
    _vit_family_specs(),
    model_class_for=lambda spec: DeiT if spec.arch.get("distillation_token") else ViT,
    param_count=lambda arch: vit_param_count(ViTConfig(**arch)),
)
register_variants(
    _transformer_specs(),
    model_class_for=lambda spec: Transformer,
    param_count=lambda arch: transformer_param_count(TransformerConfig(**arch)),
)
register_variants(_mae_specs(), model_class_for=lambda spec: MAE, param_count=_mae_param_count)
