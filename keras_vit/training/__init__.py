"""Training parts: schedules, optimizers (decay exclusion, layer-wise decay), callbacks, exact resume, fine-tuning."""

from keras_vit.training.callbacks import (
    AtomicCheckpoint,
    HistoryLog,
    NonFiniteLossError,
    ResumableEarlyStopping,
    StopOnNonFiniteLoss,
    build_callbacks,
)
from keras_vit.training.finetune import freeze_backbone, transfer_weights, unfreeze
from keras_vit.training.io import CheckpointWriteError
from keras_vit.training.optimizers import (
    FusedAdam,
    LayerDecayAdamW,
    LayerDecaySGD,
    build_optimizer,
    layer_decay_multipliers,
)
from keras_vit.training.resume import BackupError, TrainingBackup, fit_resumable
from keras_vit.training.schedules import WarmupCosine, scale_lr

__all__ = [
    "AtomicCheckpoint",
    "BackupError",
    "CheckpointWriteError",
    "FusedAdam",
    "HistoryLog",
    "LayerDecayAdamW",
    "LayerDecaySGD",
    "NonFiniteLossError",
    "ResumableEarlyStopping",
    "StopOnNonFiniteLoss",
    "TrainingBackup",
    "WarmupCosine",
    "build_callbacks",
    "build_optimizer",
    "fit_resumable",
    "freeze_backbone",
    "layer_decay_multipliers",
    "scale_lr",
    "transfer_weights",
    "unfreeze",
]
