"""Training parts: schedules, optimizers with decay exclusion and layer-wise decay, callbacks, fine-tuning."""

from keras_vit.training.callbacks import AtomicCheckpoint, build_callbacks
from keras_vit.training.finetune import freeze_backbone, transfer_weights, unfreeze
from keras_vit.training.optimizers import (
    FusedAdam,
    LayerDecayAdamW,
    LayerDecaySGD,
    build_optimizer,
    layer_decay_multipliers,
)
from keras_vit.training.schedules import WarmupCosine, scale_lr

__all__ = [
    "AtomicCheckpoint",
    "FusedAdam",
    "LayerDecayAdamW",
    "LayerDecaySGD",
    "WarmupCosine",
    "build_callbacks",
    "build_optimizer",
    "freeze_backbone",
    "layer_decay_multipliers",
    "scale_lr",
    "transfer_weights",
    "unfreeze",
]
