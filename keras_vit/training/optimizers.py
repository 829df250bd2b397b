"""Optimizers with per-variable learning-rate multipliers (layer-wise decay) and decay exclusion.

Keras 3 optimizers take one learning rate. `LayerDecayAdamW` and
`LayerDecaySGD` add `lr_multipliers` ({variable path: factor}): each
variable's step, and its decoupled weight decay, use `factor x lr`, as timm's
parameter groups with `lr_scale` do. `build_optimizer` puts a recipe's pieces
together: weight decay off the model's `no_weight_decay_variables()`,
layer-wise decay from `layer_groups()`, global-norm clipping and EMA.
They, and `FusedAdam` (plain Adam, the sequence Transformer's), run their
update as one fused TensorFlow kernel per variable where TensorFlow executes
op by op (`keras_vit.training.fused_updates`).
"""

from __future__ import annotations

from collections import defaultdict

import keras
from keras import ops

from keras_vit.training.fused_updates import FusedAdamUpdate, FusedSGDUpdate

OPTIMIZERS = ("adamw", "sgd")


class _LrMultipliers:
    """Mixin: scales the learning rate (and weight decay step) of listed variables."""

    def __init__(self, *args, lr_multipliers: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        for path, factor in (lr_multipliers or {}).items():
            if not factor >= 0:
                raise ValueError(f"Learning-rate multipliers must be >= 0. Received: {path}={factor!r}")
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self._lr_scales: list[float] = []

    def build(self, var_list):
        super().build(var_list)
        self._lr_scales = [self.lr_multipliers.get(v.path, 1.0) for v in var_list]

    def _scale_of(self, variable) -> float:
        if not self._lr_scales:
            return 1.0
        return self._lr_scales[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._scale_of(variable)
        if scale != 1.0:
            learning_rate = ops.multiply(ops.cast(learning_rate, "float32"), scale)
        return super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None or not self.lr_multipliers:
            return super()._apply_weight_decay(variables)
        groups = defaultdict(list)
        for variable in variables:
            groups[self._scale_of(variable)].append(variable)
        base = self.weight_decay
        try:  # decoupled decay is lr x wd x w: scaling wd by the group's factor scales its lr
            for scale, group in groups.items():
                self.weight_decay = base * scale
                super()._apply_weight_decay(group)
        finally:
            self.weight_decay = base

    def get_config(self) -> dict:
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerDecayAdamW(_LrMultipliers, FusedAdamUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with `lr_multipliers` ({variable path: factor}) and a fused update."""


@keras.saving.register_keras_serializable(package="keras_vit")
class FusedAdam(FusedAdamUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with a fused update (the sequence Transformer's optimizer)."""


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerDecaySGD(_LrMultipliers, FusedSGDUpdate, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with `lr_multipliers` ({variable path: factor}) and a fused momentum update."""


def layer_decay_multipliers(model: keras.Model, decay: float) -> dict[str, float]:
    """Per-variable factors `decay ** (num_groups - 1 - group)` from `model.layer_groups()`.

    Group 0 (embeddings) gets the smallest rate, the head group the full rate
    (BEiT / timm `param_groups_layer_decay`).
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"`layer_decay` must be in (0, 1]. Received: layer_decay={decay!r}")
    if not hasattr(model, "layer_groups"):
        raise ValueError(f"Layer-wise decay needs a model with `layer_groups()`; {type(model).__name__} has none.")
    groups = model.layer_groups()
    last = len(groups) - 1
    return {v.path: decay ** (last - i) for i, group in enumerate(groups) for v in group}


def build_optimizer(
    name: str,
    learning_rate,
    *,
    model: keras.Model | None = None,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    beta_2: float = 0.999,
    clip_norm: float | None = None,
    layer_decay: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.9999,
) -> keras.optimizers.Optimizer:
    """The optimizer of a recipe.

    Args:
        name: "adamw" or "sgd" (with momentum).
        learning_rate: float or schedule (`WarmupCosine`).
        model: the model to train; its `no_weight_decay_variables()` get no
            decay and its `layer_groups()` define layer-wise decay.
        weight_decay: decoupled weight decay (0: off).
        momentum: SGD momentum.
        beta_2: AdamW's second-moment decay (MAE pretraining uses 0.95).
        clip_norm: global gradient-norm clipping (None: off).
        layer_decay: layer-wise learning-rate decay factor (None: off).
        use_ema: keep an exponential moving average of the weights.
        ema_momentum: EMA decay per step.

    Returns:
        A Keras optimizer.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}. Expected one of {OPTIMIZERS}.")
    if weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"`clip_norm` must be positive or None. Received: clip_norm={clip_norm}")
    multipliers = layer_decay_multipliers(model, layer_decay) if layer_decay not in (None, 1.0) else None
    common = dict(global_clipnorm=clip_norm, use_ema=use_ema, ema_momentum=ema_momentum, lr_multipliers=multipliers)
    if name == "adamw":
        optimizer = LayerDecayAdamW(
            learning_rate, weight_decay=weight_decay, beta_1=0.9, beta_2=beta_2, epsilon=1e-8, **common
        )
    else:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        optimizer = LayerDecaySGD(learning_rate, momentum=momentum, weight_decay=weight_decay or None, **common)
    if weight_decay and model is not None and hasattr(model, "no_weight_decay_variables"):
        optimizer.exclude_from_weight_decay(var_list=model.no_weight_decay_variables())
    return optimizer
