"""Adversarial examples (FGSM, PGD) and PGD adversarial training, in pixel units.

FGSM: Goodfellow et al. 2014 (https://arxiv.org/abs/1412.6572), one signed-
gradient step of size epsilon. PGD: Madry et al. 2017
(https://arxiv.org/abs/1706.06083), `steps` signed-gradient steps of
`step_size` from a random start in the epsilon ball, each projected back onto
the L-infinity ball around the clean image and onto the valid pixel range.

Models here take *normalised* images `(pixels - mean) / std` (see
`keras_vit.model_spec(name).mean/std`). Epsilon and step size are in pixel
units (e.g. 8/255 of a [0, 1] image), so attacks undo the normalisation,
perturb and clip in pixel space, and normalise again for the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_vit.training.distillation import correct, cross_entropy, weighted_mean
from keras_vit.validation import check_int


class PixelSpace:
    """Maps between a model's normalised inputs and pixels, and knows the valid pixel range.

    Args:
        mean: per-channel mean of the normalisation, or None (inputs are pixels).
        std: per-channel std of the normalisation, or None.
        pixel_range: (low, high) valid pixel values. Defaults to (0, 1).
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pixel_range: tuple[float, float] = (0.0, 1.0),
    ):
        if (mean is None) != (std is None):
            raise ValueError(f"Pass both `mean` and `std`, or neither. Received: mean={mean!r}, std={std!r}")
        if std is not None and min(np.ravel(std)) <= 0:
            raise ValueError(f"`std` must be positive. Received: std={std!r}")
        low, high = pixel_range
        if not low < high:
            raise ValueError(
                f"`pixel_range` must be (low, high) with low < high. Received: pixel_range={pixel_range!r}"
            )
        self.mean = None if mean is None else tf.constant(np.ravel(mean), tf.float32)
        self.std = None if std is None else tf.constant(np.ravel(std), tf.float32)
        self.low, self.high = float(low), float(high)

    def get_config(self) -> dict[str, Any]:
        return {
            "mean": None if self.mean is None else [float(v) for v in self.mean.numpy()],
            "std": None if self.std is None else [float(v) for v in self.std.numpy()],
            "pixel_range": [self.low, self.high],
        }

    def to_pixels(self, images):
        images = tf.cast(images, tf.float32)
        return images if self.mean is None else images * self.std + self.mean

    def to_inputs(self, pixels):
        return pixels if self.mean is None else (pixels - self.mean) / self.std


def check_attack_args(epsilon: float, steps: int, step_size: float | None) -> float:
    """Validates attack arguments; returns the step size (Madry's 2.5 * epsilon / steps by default)."""
    if not isinstance(epsilon, (int, float)) or epsilon < 0:
        raise ValueError(
            f"`epsilon` (L-inf radius in pixel units) must be a number >= 0. Received: epsilon={epsilon!r}"
        )
    check_int(steps, "steps", minimum=1)
    if step_size is None:
        return 2.5 * float(epsilon) / steps
    if not step_size > 0:
        raise ValueError(f"`step_size` must be > 0. Received: step_size={step_size!r}")
    return float(step_size)


def pgd_attack(
    model,
    images,
    labels,
    *,
    epsilon: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    pixels: PixelSpace | None = None,
    seed: Any = 0,
):
    """Projected gradient descent (L-infinity) adversarial examples.

    Args:
        model: callable mapping normalised images to logits (run with `training=False`).
        images: float `(batch, h, w, c)` normalised images.
        labels: int `(batch,)` or float `(batch, classes)` labels the attack moves away from.
        epsilon: float. L-infinity radius in pixel units.
        steps: int. Gradient steps. Defaults to 10.
        step_size: float or None. Pixel units per step. Defaults to 2.5 * epsilon / steps.
        random_start: bool. Start from a uniform point in the epsilon ball. Defaults to True.
        pixels: `PixelSpace` or None. The model's normalisation and valid
            range. Defaults to None (inputs are [0, 1] pixels).
        seed: int or a `(2,)` int tensor. Seed of the random start (stateless, repeatable).

    Returns:
        The adversarial batch, normalised like `images`, each pixel within
        epsilon of the clean one and inside the valid range.
    """
    step_size = check_attack_args(epsilon, steps, step_size)
    pixels = pixels or PixelSpace()
    clean = tf.clip_by_value(pixels.to_pixels(images), pixels.low, pixels.high)
    lower = tf.maximum(clean - epsilon, pixels.low)
    upper = tf.minimum(clean + epsilon, pixels.high)
    adversarial = clean
    if random_start and epsilon > 0:
        seed = tf.constant([seed, 0], tf.int32) if isinstance(seed, int) else tf.reshape(tf.cast(seed, tf.int32), (2,))
        noise = tf.random.stateless_uniform(tf.shape(clean), seed, -epsilon, epsilon, dtype=tf.float32)
        adversarial = tf.clip_by_value(clean + noise, lower, upper)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(adversarial)
            logits = model(pixels.to_inputs(adversarial), training=False)
            loss = tf.reduce_sum(cross_entropy(labels, logits))
        gradient = tape.gradient(loss, adversarial)
        adversarial = tf.clip_by_value(adversarial + step_size * tf.sign(gradient), lower, upper)
    return tf.stop_gradient(pixels.to_inputs(adversarial))


def fgsm_attack(model, images, labels, *, epsilon: float, pixels: PixelSpace | None = None):
    """Fast gradient sign method: `x + epsilon * sign(grad_x loss)`, clipped to the valid range.

    Args: as `pgd_attack`.

    Returns:
        The adversarial batch, normalised like `images`.
    """
    return pgd_attack(
        model, images, labels, epsilon=epsilon, steps=1, step_size=float(epsilon), random_start=False, pixels=pixels
    )


def evaluate_robustness(
    model,
    images,
    labels,
    *,
    epsilon: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    pixels: PixelSpace | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """Clean and robust (PGD) accuracy of a classifier on arrays of normalised images.

    Args:
        model: the classifier (normalised images -> logits).
        images, labels: numpy arrays; labels are class indices.
        epsilon, steps, step_size, random_start, pixels: see `pgd_attack`
            (`steps=1, random_start=False, step_size=epsilon` is FGSM).
        batch_size: int. Defaults to 256.
        seed: int. Seed of the random starts.

    Returns:
        {"clean_accuracy", "robust_accuracy", "epsilon", "steps"}.
    """
    step_size = check_attack_args(epsilon, steps, step_size)

    @tf.function(autograph=False)  # plain Python loop over the steps: nothing to convert
    def batch_counts(x, y, mask, batch_seed):
        clean_hits = tf.reduce_sum(mask * correct(y, model(x, training=False)))
        adversarial = pgd_attack(
            model,
            x,
            y,
            epsilon=epsilon,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            pixels=pixels,
            seed=batch_seed,
        )
        return clean_hits, tf.reduce_sum(mask * correct(y, model(adversarial, training=False)))

    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    clean = robust = 0.0
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        mask = np.ones(len(x), np.float32)
        if len(x) < batch_size and len(images) > batch_size:  # pad the last batch: one trace for every batch
            pad = batch_size - len(x)
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
            mask = np.concatenate([mask, np.zeros(pad, np.float32)])
        hits = batch_counts(tf.constant(x), tf.constant(y), tf.constant(mask), tf.constant([seed, start], tf.int32))
        clean, robust = clean + float(hits[0]), robust + float(hits[1])
    total = max(len(images), 1)
    return {
        "clean_accuracy": clean / total,
        "robust_accuracy": robust / total,
        "epsilon": float(epsilon),
        "steps": steps,
    }


@keras.saving.register_keras_serializable(package="keras_vit")
class AdversarialTrainer(keras.Model):
    """PGD adversarial training (Madry et al. 2017) of a classifier, through `fit`.

    Each training step replaces the batch by PGD examples against the current
    weights (optionally mixing in the clean loss) and trains on them.
    Evaluation reports the clean accuracy and the robust accuracy under the
    evaluation attack. Save `trainer.model`.

    Args:
        model: keras.Model mapping normalised images to logits.
        epsilon: float. L-infinity radius in pixel units.
        steps: int. PGD steps while training. Defaults to 7.
        step_size: float or None. Defaults to 2.5 * epsilon / steps.
        eval_steps: int or None. PGD steps for `evaluate`. Defaults to `steps`.
        random_start: bool. Defaults to True.
        pixels: `PixelSpace` or None (inputs are [0, 1] pixels).
        clean_weight: float in [0, 1]. Weight of the clean loss (0: pure PGD
            training, Madry's). Defaults to 0.
        label_smoothing: float. Defaults to 0.
        seed: int. Seed of the random starts. Defaults to 0.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        epsilon: float,
        steps: int = 7,
        step_size: float | None = None,
        eval_steps: int | None = None,
        random_start: bool = True,
        pixels: PixelSpace | None = None,
        clean_weight: float = 0.0,
        label_smoothing: float = 0.0,
        seed: int = 0,
        **kwargs,
    ):
        self.step_size = check_attack_args(epsilon, steps, step_size)
        self.eval_step_size = check_attack_args(epsilon, eval_steps or steps, step_size)
        if not 0.0 <= clean_weight <= 1.0:
            raise ValueError(f"`clean_weight` must be in [0, 1]. Received: clean_weight={clean_weight!r}")
        super().__init__(name=kwargs.pop("name", "adversarial_trainer"), **kwargs)
        self.model = model
        self.epsilon, self.steps, self.eval_steps = float(epsilon), steps, eval_steps or steps
        self.step_size_arg = step_size
        self.random_start, self.pixels = random_start, pixels or PixelSpace()
        self.clean_weight, self.label_smoothing, self.seed = clean_weight, label_smoothing, seed
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.robust_tracker = keras.metrics.Mean(name="robust_accuracy")
        self.built = model.built  # fit callbacks (BackupAndRestore) need a built model

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.accuracy_tracker, self.robust_tracker]

    def call(self, images, training=False):
        return self.model(images, training=training)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "epsilon": self.epsilon,
            "steps": self.steps,
            "step_size": self.step_size_arg,
            "eval_steps": self.eval_steps,
            "random_start": self.random_start,
            "pixels": self.pixels.get_config(),
            "clean_weight": self.clean_weight,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
        pixels = PixelSpace(**config.pop("pixels"))
        return cls(model, pixels=pixels, **config)

    def _attack(self, images, labels, steps, step_size):
        # stateless seeds from the step counter and replica: repeatable, and distinct on every replica
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        step = tf.cast(self.optimizer.iterations, tf.int32) if self.optimizer is not None else 0
        seed = tf.stack([tf.cast(self.seed + 7919 * replica_id, tf.int32), step])
        return pgd_attack(
            self.model,
            images,
            labels,
            epsilon=self.epsilon,
            steps=steps,
            step_size=step_size,
            random_start=self.random_start,
            pixels=self.pixels,
            seed=seed,
        )

    def train_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        adversarial = self._attack(images, labels, self.steps, self.step_size)
        with tf.GradientTape() as tape:
            adversarial_logits = self.model(adversarial, training=True)
            per_example = (1.0 - self.clean_weight) * cross_entropy(labels, adversarial_logits, self.label_smoothing)
            clean_logits = None
            if self.clean_weight:
                clean_logits = self.model(images, training=True)
                per_example += self.clean_weight * cross_entropy(labels, clean_logits, self.label_smoothing)
            loss = weighted_mean(per_example, sample_weight)
            if self.model.losses:
                loss = loss + tf.add_n(self.model.losses)
            scaled = self.optimizer.scale_loss(loss / tf.distribute.get_strategy().num_replicas_in_sync)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        if clean_logits is None:
            clean_logits = self.model(images, training=False)
        return self._update_metrics(loss, labels, clean_logits, adversarial_logits)

    def test_step(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        adversarial = self._attack(images, labels, self.eval_steps, self.eval_step_size)
        clean_logits = self.model(images, training=False)
        adversarial_logits = self.model(adversarial, training=False)
        loss = weighted_mean(cross_entropy(labels, adversarial_logits, self.label_smoothing), sample_weight)
        return self._update_metrics(loss, labels, clean_logits, adversarial_logits)

    def _update_metrics(self, loss, labels, clean_logits, adversarial_logits):
        self.loss_tracker.update_state(loss, sample_weight=tf.shape(clean_logits)[0])
        self.accuracy_tracker.update_state(correct(labels, clean_logits))
        self.robust_tracker.update_state(correct(labels, adversarial_logits))
        return {m.name: m.result() for m in self.metrics}
