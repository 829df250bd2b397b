"""`make_pipeline`: an `ImageSource` -> batched, preprocessed, prefetched `tf.data.Dataset`.

Training: seeded shuffle (reshuffled every epoch), decode, random crop/flip,
RandAugment, batch (full batches only, so every replica gets an equal share),
random erasing, normalisation, mixup/cutmix. Evaluation: decode, resize and
centre crop, normalisation, batch. Labels are one-hot float32 so mixed labels
and label smoothing share one loss. Every random op draws from seeds derived
from `seed`, so two pipelines with the same seed yield the same batches.
"""

from __future__ import annotations

import tensorflow as tf

from keras_vit.data.augment import Augment, MixupCutmix, rand_augment, random_erasing
from keras_vit.data.preprocessing import Preprocessing, TrainCrop
from keras_vit.data.sources import ImageSource
from keras_vit.validation import check_positive_int

AUTOTUNE = tf.data.AUTOTUNE


def _seeds(seed: int, salt: int) -> tf.data.Dataset:
    """An endless data set of shape-(2,) int64 seeds, different each epoch and repeatable."""
    return tf.data.Dataset.random(seed=seed * 1000 + salt, rerandomize_each_iteration=True).batch(2)


def make_pipeline(
    source: ImageSource,
    preprocessing: Preprocessing,
    batch_size: int,
    *,
    training: bool,
    crop: TrainCrop | None = None,
    augment: Augment | None = None,
    seed: int = 0,
    shuffle_buffer: int = 50_000,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """Builds the input pipeline of one split.

    Args:
        source: the split (`keras_vit.data.load_source`).
        preprocessing: resize/crop/normalise settings (`Preprocessing.from_spec`).
        batch_size: global batch size.
        training: shuffle and augment when True; resize and centre crop when False.
        crop: training crop; defaults to `TrainCrop()` (random-resized crop and flip).
        augment: batch augmentation; None for none.
        seed: seed of the shuffle and of every random op.
        shuffle_buffer: largest shuffle buffer (the split size when smaller).
        drop_remainder: keep only full batches; defaults to `training`.

    Returns:
        A data set of `(images (b, h, w, c) float32, labels (b, classes) float32)`.
    """
    check_positive_int(batch_size, "batch_size")
    if source.num_channels != preprocessing.num_channels:
        raise ValueError(
            f"{source.name} has {source.num_channels}-channel images but the model takes "
            f"{preprocessing.num_channels}. Pick a model with num_channels={source.num_channels}."
        )
    drop_remainder = training if drop_remainder is None else drop_remainder
    if drop_remainder and source.num_examples < batch_size:
        raise ValueError(
            f"{source.name}/{source.split} has {source.num_examples} examples, fewer than one batch of "
            f"{batch_size}. Use a smaller batch_size."
        )
    num_classes = source.num_classes
    height, width = preprocessing.image_size
    ds = source.make()
    if training:
        ds = ds.shuffle(min(shuffle_buffer, source.num_examples), seed=seed, reshuffle_each_iteration=True)
    if source.decode is not None:
        ds = ds.map(source.decode, num_parallel_calls=AUTOTUNE)
    augment = augment or Augment()
    if training:
        crop = crop or TrainCrop()
        randaug = rand_augment(augment, seed)

        def train_example(element, example_seed):
            image, label = element
            # static shape first: RandAugment's colour ops need to see the channel count
            image = tf.ensure_shape(
                crop(image, example_seed, preprocessing), [height, width, preprocessing.num_channels]
            )
            if randaug is not None:
                image = tf.clip_by_value(tf.cast(randaug(image, training=True), tf.float32), 0.0, 1.0)
            return image, label

        ds = tf.data.Dataset.zip((ds, _seeds(seed, 1))).map(train_example, num_parallel_calls=AUTOTUNE)
    else:

        def eval_example(image, label):
            image = preprocessing.eval_crop(image)
            return tf.ensure_shape(image, [height, width, preprocessing.num_channels]), label

        ds = ds.map(eval_example, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    eraser = random_erasing(augment, seed) if training else None
    mixer = (
        MixupCutmix(augment.mixup_alpha, augment.cutmix_alpha, augment.mix_prob, augment.switch_prob, seed)
        if training and augment.mixes
        else None
    )

    def finish_batch(images, labels, batch_seed=None):
        if eraser is not None:
            images = tf.cast(eraser(images, training=True), tf.float32)
        images = preprocessing.normalize(images)
        labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        if mixer is not None:
            images, labels = mixer(images, labels, batch_seed)
        return images, labels

    if mixer is not None:
        # One call at a time: the Keras layers draw from a stateful seed generator, kept in order here.
        ds = tf.data.Dataset.zip((ds, _seeds(seed, 2))).map(lambda batch, s: finish_batch(*batch, s))
    else:
        ds = ds.map(finish_batch, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
