import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit.data import Preprocessing, TrainCrop


def test_from_spec_reads_the_model_spec():
    spec = keras_vit.model_spec("vit_cifar_patch4_32")
    prep = Preprocessing.from_spec(spec)
    assert prep.image_size == (32, 32) and prep.mean == tuple(spec.mean) and prep.std == tuple(spec.std)
    assert prep.crop_pct == spec.crop_pct and prep.num_channels == 3
    assert Preprocessing.from_spec(spec, image_size=48).image_size == (48, 48)


def test_eval_crop_resizes_shorter_side_then_centre_crops():
    # 16x32 image, size 8, crop_pct 1: area-resize by exactly 2 (2x2 block means) to 8x16, keep columns 4..12
    image = np.arange(16 * 32, dtype=np.float32).reshape(16, 32, 1) / (16 * 32)
    prep = Preprocessing(8, mean=(0.0,), std=(1.0,), crop_pct=1.0, interpolation="area", num_channels=1)
    out = prep.eval_crop(tf.constant(image)).numpy()
    blocks = image.reshape(8, 2, 16, 2, 1).mean(axis=(1, 3))
    np.testing.assert_allclose(out, blocks[:, 4:12], atol=1e-6)


def test_eval_crop_fraction_follows_timm():
    # size 8 with crop_pct 0.5: shorter side to floor(8 / 0.5) = 16 (no resize here), central 8x8
    image = np.random.default_rng(0).random((16, 16, 3)).astype("float32")
    prep = Preprocessing(8, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=0.5)
    np.testing.assert_allclose(prep.eval_crop(tf.constant(image)).numpy(), image[4:12, 4:12], atol=1e-6)


def test_normalize_is_mean_std():
    prep = Preprocessing(4, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    image = np.random.default_rng(1).random((4, 4, 3)).astype("float32")
    expected = (image - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.25, 2.0])
    np.testing.assert_allclose(prep.normalize(tf.constant(image)).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["random_resized", "pad_crop", "resize"])
def test_train_crops_are_seeded(mode):
    prep = Preprocessing(8, mean=(0, 0, 0), std=(1, 1, 1))
    image = tf.constant(np.random.default_rng(2).random((20, 14, 3)).astype("float32"))
    crop = TrainCrop(mode, pad=2)
    a = crop(image, tf.constant([1, 2]), prep).numpy()
    b = crop(image, tf.constant([1, 2]), prep).numpy()
    assert a.shape == (8, 8, 3) and a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    if mode != "resize":
        outs = [crop(image, tf.constant([s, 0]), prep).numpy() for s in range(6)]
        assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_bad_values_are_named():
    with pytest.raises(ValueError, match=r"one value per channel \(3\).*mean=\(0\.5,\)"):
        Preprocessing(8, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match=r"crop_pct=1\.5"):
        Preprocessing(8, mean=(0,), std=(1,), crop_pct=1.5, num_channels=1)
    with pytest.raises(ValueError, match=r"mode='center'"):
        TrainCrop("center")
