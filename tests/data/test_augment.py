"""Mixup/cutmix: labels carry exactly the weights the pixels were mixed with."""

import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit.data import Augment, MixupCutmix, Preprocessing, TrainCrop, load_source, make_pipeline

BATCH = 8


def _batch():
    # image i is constant i + 1 and has class i: a pixel's value tells which images it came from
    values = np.arange(1, BATCH + 1, dtype=np.float32)
    images = np.broadcast_to(values[:, None, None, None], (BATCH, 8, 8, 3)).copy()
    return tf.constant(images), tf.constant(np.eye(BATCH, dtype=np.float32)), values


def _check_mixed(images, labels, values):
    images, labels = images.numpy(), labels.numpy()
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    # mean pixel = label-weighted mean of the source values (mixup: blend weight; cutmix: pasted area)
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), labels @ values, atol=1e-4)


def _is_cutmix(images, values):
    return np.all(np.isin(np.round(images.numpy(), 4), values))


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_labels_mix_like_pixels(mixup, cutmix):
    images, labels, values = _batch()
    mixer = MixupCutmix(mixup, cutmix, seed=3)
    kinds = set()
    for s in range(12):
        out_images, out_labels = mixer(images, labels, tf.constant([s, 7]))
        _check_mixed(out_images, out_labels, values)
        kinds.add("cutmix" if _is_cutmix(out_images, values) else "mixup")
    expected = {"mixup"} if not cutmix else ({"cutmix"} if not mixup else {"mixup", "cutmix"})
    assert kinds == expected  # switched per batch when both are on


def test_mix_prob_zero_leaves_batches_alone():
    images, labels, _ = _batch()
    out_images, out_labels = MixupCutmix(0.8, 1.0, mix_prob=0.0, seed=0)(images, labels, tf.constant([0, 1]))
    np.testing.assert_array_equal(out_images.numpy(), images.numpy())
    np.testing.assert_array_equal(out_labels.numpy(), labels.numpy())


def test_mixup_actually_mixes():
    images, labels, values = _batch()
    out_images, out_labels = MixupCutmix(1.0, 0.0, seed=0)(images, labels, tf.constant([0, 0]))
    assert (out_labels.numpy().max(axis=1) < 0.999).sum() >= BATCH // 2


def test_pipeline_batches_are_repeatable_and_mixed():
    source = load_source("digits", "test")
    prep = Preprocessing.from_spec(keras_vit.model_spec("vit_digits_patch2_8"))
    augment = Augment(mixup_alpha=0.8, cutmix_alpha=1.0, random_erasing=0.25)

    def first(seed):
        ds = make_pipeline(
            source, prep, 32, training=True, crop=TrainCrop("pad_crop", pad=1, hflip=False), augment=augment, seed=seed
        )
        return next(iter(ds))

    x1, y1 = first(5)
    x2, y2 = first(5)
    x3, _ = first(6)
    assert x1.shape == (32, 8, 8, 1) and y1.shape == (32, 10)
    np.testing.assert_allclose(y1.numpy().sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    np.testing.assert_allclose(x1.numpy(), x2.numpy())
    assert not np.allclose(x1.numpy(), x3.numpy())


def test_augmentation_stays_float32_under_a_mixed_precision_policy():
    """Mixed bfloat16 (a recipe's "auto" precision on bfloat16 CPUs) must not leak into the input pipeline."""
    import keras

    source = load_source("digits", "test")
    prep = Preprocessing.from_spec(keras_vit.model_spec("vit_digits_patch2_8"))
    augment = Augment(randaugment_ops=2, mixup_alpha=0.8, cutmix_alpha=1.0, random_erasing=0.25)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # conftest restores float32
    images, labels = next(iter(make_pipeline(source, prep, 32, training=True, augment=augment, seed=1)))
    assert images.dtype == tf.float32 and labels.dtype == tf.float32
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, atol=1e-5)


def test_eval_pipeline_keeps_every_example_in_order():
    source = load_source("digits", "test")
    prep = Preprocessing.from_spec(keras_vit.model_spec("vit_digits_patch2_8"))
    images, labels = source.as_numpy()
    batches = list(make_pipeline(source, prep, 100, training=False))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_allclose(x, (images - prep.mean[0]) / prep.std[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y.argmax(1), labels)


def test_bad_augment_values():
    with pytest.raises(ValueError, match=r"random_erasing=1\.5"):
        Augment(random_erasing=1.5)
    with pytest.raises(ValueError, match=r"mixup_alpha=-1"):
        Augment(mixup_alpha=-1)
