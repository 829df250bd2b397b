"""Training parts of the sequence Transformer: padded label-smoothed loss, warmup schedule, token accuracy.

All from Vaswani et al. 2017 (https://arxiv.org/abs/1706.03762): label smoothing
0.1 (section 5.4, after Szegedy et al. 2016), Adam with beta2 0.98 and epsilon
1e-9 and the inverse-square-root warmup schedule (section 5.3).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_vit.training.optimizers import FusedAdam
from keras_vit.validation import check_positive_int, check_rate


def _check_logits(y_true, y_pred) -> None:
    """Shapes must agree; when label values are known (eager), they must fit the logits' vocabulary."""
    if len(y_pred.shape) != len(y_true.shape) + 1:
        raise ValueError(
            "Expected logits of shape (batch, length, vocab) and integer labels of shape (batch, length). "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )
    vocab = y_pred.shape[-1]
    try:
        labels = np.asarray(ops.convert_to_numpy(y_true))
    except (RuntimeError, ValueError, TypeError):  # symbolic labels while tracing: nothing to check
        return
    if vocab is not None and labels.size and (labels.max() >= vocab or labels.min() < 0):
        bad = labels.max() if labels.max() >= vocab else labels.min()
        raise ValueError(
            f"Label id {int(bad)} is outside the logits' vocabulary [0, {vocab}). The labels and the model "
            "must use the same target vocabulary (check target_vocab_size)."
        )


@keras.saving.register_keras_serializable(package="keras_vit")
class LabelSmoothedSequenceLoss(keras.losses.Loss):
    """Cross-entropy against label-smoothed targets, averaged over non-padding tokens.

    The target distribution puts `1 - smoothing + smoothing / vocab` on the
    label and `smoothing / vocab` on every other token (Szegedy et al. 2016,
    https://arxiv.org/abs/1512.00567; the convention of
    `torch.nn.CrossEntropyLoss(label_smoothing=...)`). Positions whose label is
    `pad_token_id` contribute nothing and are not counted in the mean.

    Args:
        smoothing: float in [0, 1). Defaults to `0.1` (the paper).
        pad_token_id: int or None. Label ignored in the loss; None ignores nothing. Defaults to `0`.
        from_logits: bool. Must be True: the model outputs logits.
        name: str.

    Call arguments:
        y_true: int labels `(batch, length)`.
        y_pred: float logits `(batch, length, vocab)`.
        sample_weight: optional `(batch,)` or `(batch, length)` weights.

    Returns:
        A scalar loss.
    """

    def __init__(
        self,
        smoothing: float = 0.1,
        pad_token_id: int | None = 0,
        from_logits: bool = True,
        name: str = "label_smoothed_sequence_loss",
        **kwargs,
    ):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="mean_with_sample_weight", **kwargs)
        self.smoothing = check_rate(smoothing, "smoothing")
        if pad_token_id is not None and (not isinstance(pad_token_id, int) or pad_token_id < 0):
            raise ValueError(f"`pad_token_id` must be an int >= 0 or None. Received: pad_token_id={pad_token_id!r}")
        if not from_logits:
            raise ValueError("LabelSmoothedSequenceLoss works on logits. Received: from_logits=False")
        self.pad_token_id = pad_token_id
        self.from_logits = from_logits

    def __call__(self, y_true, y_pred, sample_weight=None):
        _check_logits(y_true, y_pred)
        weights = ops.ones(ops.shape(y_true), dtype="float32")
        if self.pad_token_id is not None:
            weights = ops.cast(ops.not_equal(ops.cast(y_true, "int32"), self.pad_token_id), "float32")
        if sample_weight is not None:
            sample_weight = ops.cast(sample_weight, "float32")
            if len(sample_weight.shape) == 1:
                sample_weight = sample_weight[:, None]
            weights = weights * sample_weight
        return super().__call__(y_true, y_pred, sample_weight=weights)

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        # Padding labels may be any id (they are weighted 0); clip so the gather stays in range.
        safe = ops.clip(labels, 0, ops.shape(log_probs)[-1] - 1)
        picked = ops.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
        uniform = ops.mean(log_probs, axis=-1)
        return -((1.0 - self.smoothing) * picked + self.smoothing * uniform)

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        config.update(smoothing=self.smoothing, pad_token_id=self.pad_token_id, from_logits=self.from_logits)
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class InverseSqrtSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`lr = scale * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)` (Vaswani et al. 2017, eq. 3).

    Rises linearly for `warmup_steps` steps to `scale / sqrt(d_model * warmup_steps)`,
    then decays with the inverse square root of the step. Steps count from 1
    (the optimizer's iteration 0 is step 1).

    Args:
        d_model: int. Model width (512 for transformer_base).
        warmup_steps: int. Defaults to 4000 (the paper).
        scale: float. Multiplier of the whole curve. Defaults to `1.0`.
    """

    def __init__(self, d_model: int, warmup_steps: int = 4000, scale: float = 1.0):
        for name, value in (("d_model", d_model), ("warmup_steps", warmup_steps)):
            check_positive_int(value, name)
        if not scale > 0:
            raise ValueError(f"`scale` must be positive. Received: scale={scale!r}")
        self.d_model = d_model
        self.warmup_steps = warmup_steps
        self.scale = float(scale)

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        rate = ops.minimum(ops.rsqrt(step), step * self.warmup_steps**-1.5)
        return self.scale * self.d_model**-0.5 * rate

    def get_config(self):
        return dict(d_model=self.d_model, warmup_steps=self.warmup_steps, scale=self.scale)


def transformer_optimizer(
    d_model: int, warmup_steps: int = 4000, scale: float = 1.0, clipnorm: float | None = None
) -> keras.optimizers.Adam:
    """Adam(beta1 0.9, beta2 0.98, epsilon 1e-9) on the inverse-square-root schedule (paper, section 5.3).

    A `FusedAdam`: Keras' Adam with each dense update as one TensorFlow kernel
    (docs/benchmarks.md: 1.04x on the CPU train step of a 256-wide Transformer).
    """
    return FusedAdam(
        learning_rate=InverseSqrtSchedule(d_model, warmup_steps, scale),
        beta_1=0.9,
        beta_2=0.98,
        epsilon=1e-9,
        clipnorm=clipnorm,
    )


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenAccuracy(keras.metrics.Metric):
    """Fraction of non-padding target positions whose arg-max prediction equals the label.

    Args:
        pad_token_id: int or None. Label not counted. Defaults to `0`.
        name: str.
    """

    def __init__(self, pad_token_id: int | None = 0, name: str = "token_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pad_token_id = pad_token_id
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct", dtype="float32")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        _check_logits(y_true, y_pred)
        labels = ops.cast(y_true, "int32")
        weights = ops.ones(ops.shape(labels), dtype="float32")
        if self.pad_token_id is not None:
            weights = ops.cast(ops.not_equal(labels, self.pad_token_id), "float32")
        if sample_weight is not None:
            sample_weight = ops.cast(sample_weight, "float32")
            weights = weights * (sample_weight[:, None] if len(sample_weight.shape) == 1 else sample_weight)
        hits = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), labels), "float32")
        self.correct.assign_add(ops.sum(hits * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.correct, self.count)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return dict(super().get_config(), pad_token_id=self.pad_token_id)


def teacher_forcing_batch(targets, start_token_id: int = 1, end_token_id: int = 2, pad_token_id: int = 0):
    """Builds decoder inputs and labels from padded target ids (no start/end tokens).

    `decoder_tokens = [start] + target` and `labels = target + [end]`, each
    padded with `pad_token_id` to `length + 1`; the end token goes right
    after each sequence's last real token.

    Args:
        targets: int array `(batch, length)`, right-padded with `pad_token_id`.

    Returns:
        `(decoder_tokens, labels)`, int32 `(batch, length + 1)` each.
    """
    targets = ops.cast(ops.convert_to_tensor(targets), "int32")
    if len(targets.shape) != 2:
        raise ValueError(f"`targets` must have rank 2 (batch, length). Received shape {tuple(targets.shape)}")
    batch = ops.shape(targets)[0]
    real = ops.not_equal(targets, pad_token_id)
    lengths = ops.sum(ops.cast(real, "int32"), axis=1)
    start = ops.full((batch, 1), start_token_id, dtype="int32")
    pad = ops.full((batch, 1), pad_token_id, dtype="int32")
    decoder_tokens = ops.concatenate([start, targets], axis=1)
    labels = ops.concatenate([targets, pad], axis=1)
    positions = ops.arange(ops.shape(labels)[1])[None, :]
    labels = ops.where(ops.equal(positions, lengths[:, None]), end_token_id, labels)
    return decoder_tokens, labels


def exact_match(predicted, labels, pad_token_id: int = 0) -> float:
    """Fraction of rows whose tokens equal the labels at every non-padding label position and nowhere extra.

    Args:
        predicted: int `(batch, length_p)` decoded ids (end token included, padding after).
        labels: int `(batch, length_l)` reference ids, same convention.

    Returns:
        A Python float in [0, 1].
    """
    predicted, labels = ops.convert_to_numpy(predicted), ops.convert_to_numpy(labels)
    width = max(predicted.shape[1], labels.shape[1])

    def pad_to(x):
        return np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=pad_token_id)

    return float((pad_to(predicted) == pad_to(labels)).all(axis=1).mean())
