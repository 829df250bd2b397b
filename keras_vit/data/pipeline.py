"""`make_pipeline`: an `ImageSource` -> batched, preprocessed, prefetched `tf.data.Dataset`.

Training: seeded shuffle (reshuffled every epoch), decode, random crop/flip,
RandAugment, batch (full batches only, so every replica gets an equal share),
random erasing, normalisation, mixup/cutmix. Evaluation: decode, resize and
centre crop, normalisation, batch. Labels are one-hot float32 so mixed labels
and label smoothing share one loss.

Every random op draws from a seed of its own example or batch, derived from
`seed`: the stateless crops take it directly, and the Keras augmentation
layers (whose seed generators are stateful variables) are reseeded with it
just before each call, in a sequential map. So a pipeline's n-th batch is a
pure function of (`seed`, n): two pipelines with the same seed yield the same
batches, and `skip_batches` starts one at any batch without computing the ones
before (exact resume after a crash).
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


def call_reseeded(layer, seed, *args, **kwargs):
    """`layer(*args, **kwargs)` for a Keras augmentation layer, its seed generator first set to `seed`.

    The layers draw from a stateful `SeedGenerator`; setting its state from the
    element's own shape-(2,) seed makes the draw independent of the elements
    before it. Use in sequential maps only (the state is shared).
    """
    state = layer.generator.state
    with tf.control_dependencies([state.assign(tf.cast(seed, state.dtype))]):
        return layer(*args, **kwargs)


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
    skip_batches: int = 0,
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
        skip_batches: start at this batch (training): the same batches as
            skipping them, without decoding or augmenting the skipped examples.

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
    if not isinstance(skip_batches, int) or skip_batches < 0 or (skip_batches and not training):
        raise ValueError(
            f"`skip_batches` must be an int >= 0, and 0 unless training. Received: skip_batches={skip_batches!r}"
        )
    num_classes = source.num_classes
    height, width = preprocessing.image_size
    ds = source.make()
    augment = augment or Augment()
    if training:
        # each example travels with its own seed, so skipping examples skips their draws too
        ds = ds.shuffle(min(shuffle_buffer, source.num_examples), seed=seed, reshuffle_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, _seeds(seed, 1))).skip(skip_batches * batch_size)
    if source.decode is not None:
        decode = source.decode
        ds = ds.map((lambda element, s: (decode(*element), s)) if training else decode, num_parallel_calls=AUTOTUNE)
    if training:
        crop = crop or TrainCrop()
        randaug = rand_augment(augment, seed)

        def crop_example(element, example_seed):
            image, label = element
            # static shape first: RandAugment's colour ops need to see the channel count
            image = tf.ensure_shape(
                crop(image, example_seed, preprocessing), [height, width, preprocessing.num_channels]
            )
            return image, label, example_seed

        def rand_augment_example(image, label, example_seed):
            seed = tf.random.experimental.stateless_fold_in(example_seed, 1)
            image = tf.clip_by_value(tf.cast(call_reseeded(randaug, seed, image, training=True), tf.float32), 0, 1)
            return image, label, example_seed

        ds = ds.map(crop_example, num_parallel_calls=AUTOTUNE)
        if randaug is not None:
            ds = ds.map(rand_augment_example)  # sequential: the layer's seed state is shared
        ds = ds.map(lambda image, label, _: (image, label))
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
            erase_seed = tf.random.experimental.stateless_fold_in(batch_seed, 1)
            images = tf.cast(call_reseeded(eraser, erase_seed, images, training=True), tf.float32)
        images = preprocessing.normalize(images)
        labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        if mixer is not None:
            images, labels = mixer(images, labels, batch_seed)
        return images, labels

    if eraser is not None or mixer is not None:
        # sequential: the Keras layers' seed states are shared; each batch brings its own seed
        ds = tf.data.Dataset.zip((ds, _seeds(seed, 2).skip(skip_batches))).map(lambda batch, s: finish_batch(*batch, s))
    else:
        ds = ds.map(finish_batch, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
