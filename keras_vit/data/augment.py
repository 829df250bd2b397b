"""Batch augmentation from Keras 3 core layers: RandAugment, random erasing, mixup/cutmix.

Keras 3 ships the layers (`keras.layers.RandAugment`, `RandomErasing`,
`MixUp`, `CutMix`); this module sets them up the way the DeiT recipe uses
them and switches between mixup and cutmix per batch as timm's `Mixup` does:
with probability `mix_prob` a batch is mixed, by cutmix with probability
`switch_prob` and by mixup otherwise. Labels are one-hot and mixed with the
same weights as the pixels (cutmix: the pasted pixel count, which Keras's
own CutMix label weights do not match exactly; see `_apply_cutmix`). The
layers compute in float32 whatever the global mixed-precision policy: they
are input processing, and a bfloat16 policy would make MixUp mix a bfloat16
batch with float32 weights (a dtype error).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentSettings:
    """The augmentation fields, declared once for `Augment` and `keras_vit.recipes.Recipe`.

    Keyword-only, so a dataclass that inherits them keeps its own positional order.
    See `Augment` for their meaning.
    """

    randaugment_ops: int = 0
    randaugment_magnitude: float = 0.9
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5

    def augment_settings(self) -> dict:
        """{field: value} of the augmentation fields, e.g. for `Augment(**settings)`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(AugmentSettings)}


@dataclasses.dataclass(frozen=True)
class Augment(AugmentSettings):
    """Augmentation settings of a recipe (keyword arguments), checked on construction.

    Args:
        randaugment_ops: ops per image of RandAugment (0: off). DeiT: 2.
        randaugment_magnitude: strength in [0, 1] (timm's m9 of 10 is 0.9).
        random_erasing: probability of erasing a random box per image. DeiT: 0.25.
        mixup_alpha: Beta(alpha, alpha) mixup weights (0: off). DeiT: 0.8.
        cutmix_alpha: Beta(alpha, alpha) cutmix area (0: off). DeiT: 1.0.
        mix_prob: probability that a batch is mixed at all. Defaults to 1.0.
        switch_prob: probability of cutmix rather than mixup when both are on. DeiT: 0.5.
    """

    def __post_init__(self):
        for name in ("random_erasing", "mix_prob", "switch_prob", "randaugment_magnitude"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={value}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0 (0 turns it off). Received: {name}={getattr(self, name)}")
        if self.randaugment_ops < 0:
            raise ValueError(f"`randaugment_ops` must be >= 0. Received: randaugment_ops={self.randaugment_ops}")

    @property
    def mixes(self) -> bool:
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


class MixupCutmix:
    """Mixes a batch of images and one-hot labels by mixup or cutmix, switched per batch.

    Args:
        mixup_alpha: mixup Beta parameter; 0 turns mixup off.
        cutmix_alpha: cutmix Beta parameter; 0 turns cutmix off.
        mix_prob: probability that a batch is mixed.
        switch_prob: probability of cutmix when both are on.
        seed: int seed of the layers' generators.

    Call arguments:
        images: `(batch, h, w, c)` float. labels: `(batch, classes)` float one-hot.
        seed: shape-(2,) int tensor choosing what this batch gets (mixup or
            cutmix, and their draws); call sequentially (the layers' seed state is shared).

    Returns:
        (images, labels) with labels mixed by the pixel weights.
    """

    def __init__(
        self,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        seed: int | None = None,
    ):
        Augment(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, mix_prob=mix_prob, switch_prob=switch_prob)
        self.mix_prob = mix_prob
        self.switch_prob = switch_prob if (mixup_alpha > 0 and cutmix_alpha > 0) else float(cutmix_alpha > 0)
        self.mixup = keras.layers.MixUp(alpha=mixup_alpha, seed=seed, dtype="float32") if mixup_alpha > 0 else None
        # Keras draws CutMix's alpha from U(factor); a point range gives timm's fixed alpha.
        self.cutmix = (
            keras.layers.CutMix(factor=(cutmix_alpha, cutmix_alpha), seed=seed, dtype="float32")
            if cutmix_alpha > 0
            else None
        )

    def _apply(self, layer, images, labels):
        out = layer({"images": images, "labels": labels}, training=True)
        return tf.cast(out["images"], images.dtype), tf.cast(out["labels"], labels.dtype)

    def _apply_cutmix(self, images, labels):
        # Keras 3.15's CutMix weighs labels by the continuous box area, but pastes whole pixels; on small
        # images the two differ by several percent. Weigh labels by the pasted pixels (timm's `correct_lam`).
        data = {"images": images, "labels": labels}
        transformation = self.cutmix.get_random_transformation(data, training=True)
        mixed = tf.cast(self.cutmix.transform_images(images, transformation, training=True), images.dtype)
        pasted = tf.reduce_mean(tf.cast(transformation["batch_masks"], labels.dtype), axis=[1, 2, 3])[:, None]
        partner = tf.gather(labels, transformation["permutation_order"])
        return mixed, (1.0 - pasted) * labels + pasted * partner

    def __call__(self, images, labels, seed):
        seed = tf.cast(seed, tf.int64)
        draws = tf.random.stateless_uniform([2], seed=seed)
        mix, use_cutmix = draws[0] < self.mix_prob, draws[1] < self.switch_prob
        if self.mixup is None and self.cutmix is None:
            return images, labels
        # the layers' own draws come from this batch's seed too (not from the batches before it)
        layer_seed = tf.random.experimental.stateless_fold_in(seed, 2)
        reseed = [layer.generator.state.assign(layer_seed) for layer in (self.mixup, self.cutmix) if layer is not None]
        with tf.control_dependencies(reseed):
            images = tf.identity(images)

        def mixed():
            if self.mixup is None:
                return self._apply_cutmix(images, labels)
            if self.cutmix is None:
                return self._apply(self.mixup, images, labels)
            return tf.cond(
                use_cutmix, lambda: self._apply_cutmix(images, labels), lambda: self._apply(self.mixup, images, labels)
            )

        return tf.cond(mix, mixed, lambda: (images, labels))


def rand_augment(augment: Augment, seed: int | None = None):
    """Keras `RandAugment` on [0, 1] images, or None when off."""
    if not augment.randaugment_ops:
        return None
    return keras.layers.RandAugment(
        value_range=(0, 1),
        num_ops=augment.randaugment_ops,
        factor=augment.randaugment_magnitude,
        seed=seed,
        dtype="float32",
    )


def random_erasing(augment: Augment, seed: int | None = None):
    """Keras `RandomErasing` erasing one box per image with probability `augment.random_erasing`, or None."""
    if not augment.random_erasing:
        return None
    p = augment.random_erasing
    return keras.layers.RandomErasing(factor=(p, p), value_range=(0, 1), seed=seed, dtype="float32")
