"""Learning-rate schedules: linear warmup then cosine decay (per optimizer step).

    lr(t) = start + (peak - start) * t / warmup                                  t < warmup
    lr(t) = end + (peak - end) * (1 + cos(pi * min(t - warmup, T) / T)) / 2       T = total - warmup

the schedule of ViT, DeiT and timm's `CosineLRScheduler` with a warmup prefix.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vit.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_vit")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from `warmup_start_lr` to `peak_lr`, then cosine decay to `end_lr`.

    Args:
        peak_lr: float. Learning rate at the end of warmup.
        total_steps: int. Optimizer steps of the whole run (warmup included);
            the rate stays at `end_lr` afterwards.
        warmup_steps: int. Steps of linear warmup. Defaults to 0.
        warmup_start_lr: float. Rate at step 0 of warmup. Defaults to 0.
        end_lr: float. Final rate. Defaults to 0.

    Examples:
        >>> schedule = WarmupCosine(5e-4, total_steps=300 * 2502, warmup_steps=5 * 2502)  # DeiT
        >>> keras.optimizers.AdamW(schedule, weight_decay=0.05)
    """

    def __init__(
        self, peak_lr: float, total_steps: int, warmup_steps: int = 0, warmup_start_lr: float = 0.0, end_lr: float = 0.0
    ):
        if not peak_lr > 0:
            raise ValueError(f"`peak_lr` must be positive. Received: peak_lr={peak_lr!r}")
        check_positive_int(total_steps, "total_steps")
        if not isinstance(warmup_steps, int) or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"`warmup_steps` must be an int in [0, total_steps={total_steps}]. "
                f"Received: warmup_steps={warmup_steps!r}"
            )
        if warmup_start_lr < 0 or end_lr < 0:
            raise ValueError(f"Rates must be >= 0. Received: warmup_start_lr={warmup_start_lr}, end_lr={end_lr}")
        self.peak_lr = float(peak_lr)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.warmup_start_lr = float(warmup_start_lr)
        self.end_lr = float(end_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        warm = self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * step / max(warmup, 1.0)
        progress = ops.clip((step - warmup) / decay_steps, 0.0, 1.0)
        cosine = self.end_lr + 0.5 * (self.peak_lr - self.end_lr) * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < warmup, warm, cosine)

    def get_config(self) -> dict:
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_start_lr": self.warmup_start_lr,
            "end_lr": self.end_lr,
        }


def scale_lr(base_lr: float, batch_size: int, base_batch_size: int | None) -> float:
    """The linear scaling rule (Goyal et al. 2017; DeiT: 5e-4 x batch / 512); no scaling when base is None."""
    return base_lr if not base_batch_size else base_lr * batch_size / base_batch_size
