"""The training pipeline is a pure function of (seed, batch index): equal runs, and skipping is exact."""

import numpy as np
import pytest

from keras_vit import data as vit_data
from tests.training.cifar_files import write_cifar10


@pytest.fixture(scope="module")
def cifar_train(tmp_path_factory):
    root = write_cifar10(str(tmp_path_factory.mktemp("cifar")), per_file=8)
    return vit_data.load_source("cifar10", "train", root)


def pipeline(source, seed=3, skip_batches=0, **augment):
    preprocessing = vit_data.Preprocessing(image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    settings = dict(randaugment_ops=2, random_erasing=0.5, mixup_alpha=0.8, cutmix_alpha=1.0, **augment)
    return vit_data.make_pipeline(
        source,
        preprocessing,
        8,
        training=True,
        crop=vit_data.TrainCrop("pad_crop"),
        augment=vit_data.Augment(**settings),
        seed=seed,
        skip_batches=skip_batches,
    )


def batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_same_seed_same_batches_with_every_augmentation(cifar_train):
    first, second = batches(pipeline(cifar_train)), batches(pipeline(cifar_train))
    assert len(first) == 5
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    other = batches(pipeline(cifar_train, seed=4))
    assert not np.array_equal(first[0][0], other[0][0])


@pytest.mark.parametrize("skip", [1, 3])
def test_skip_batches_equals_dropping_them(cifar_train, skip):
    whole = batches(pipeline(cifar_train))
    skipped = batches(pipeline(cifar_train, skip_batches=skip))
    assert len(skipped) == len(whole) - skip
    for (x1, y1), (x2, y2) in zip(whole[skip:], skipped):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_skip_batches_is_checked(cifar_train):
    with pytest.raises(ValueError, match="skip_batches=-1"):
        pipeline(cifar_train, skip_batches=-1)
