"""TFDS names through TFDS's own offline mock data (no download)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_vit.data import Preprocessing, load_source, make_pipeline


def test_tfds_source_and_pipeline():
    with tfds.testing.mock_data(num_examples=6):
        source = load_source("tfds:mnist", "train")
        assert (source.num_examples, source.num_classes, source.num_channels, source.image_size) == (6, 10, 1, (28, 28))
        images, labels = source.as_numpy()
        assert images.shape == (6, 28, 28, 1) and images.min() >= 0.0 and images.max() <= 1.0
        prep = Preprocessing(14, mean=(0.5,), std=(0.5,), crop_pct=1.0, num_channels=1)
        x, y = next(iter(make_pipeline(source, prep, 3, training=False)))
        assert x.shape == (3, 14, 14, 1) and y.shape == (3, 10)
        np.testing.assert_array_equal(y.numpy().argmax(1), labels[:3])


def test_unknown_tfds_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"TFDS could not load 'no_such_dataset_here'"):
        load_source("tfds:no_such_dataset_here", download=False)
