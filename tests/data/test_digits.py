import numpy as np
import pytest

import keras_vit
from keras_vit.data import digits_arrays, load_source


def test_fixed_stratified_held_out_split():
    train_x, train_y = digits_arrays("train")
    test_x, test_y = digits_arrays("test")
    assert train_x.shape == (1437, 8, 8, 1) and test_x.shape == (360, 8, 8, 1)
    assert train_x.dtype == np.uint8 and train_x.max() == 16
    # stratified: every digit holds 20% +- 1 image of its count in the test split
    counts_test, counts_all = np.bincount(test_y), np.bincount(np.concatenate([train_y, test_y]))
    assert np.all(np.abs(counts_test - 0.2 * counts_all) <= 1)
    again_x, again_y = digits_arrays("test")
    np.testing.assert_array_equal(again_x, test_x)
    np.testing.assert_array_equal(again_y, test_y)


def test_source_scales_to_unit_range_and_spec_holds_real_statistics():
    images, labels = load_source("digits", "train").as_numpy()
    assert images.dtype == np.float32 and images.min() == 0.0 and images.max() == 1.0
    spec = keras_vit.model_spec("vit_digits_patch2_8")
    # the model's normalisation must be the training split's real statistics
    np.testing.assert_allclose(spec.mean, [images.mean()], atol=1e-4)
    np.testing.assert_allclose(spec.std, [images.std()], atol=1e-4)
    assert set(labels.tolist()) == set(range(10))


def test_bad_split_names_the_choices():
    with pytest.raises(ValueError, match=r"splits \('train', 'test'\).*split='val'"):
        load_source("digits", "val")
    with pytest.raises(ValueError, match=r"Unknown data set 'mnist'"):
        load_source("mnist")


def test_split_and_subset_are_disjoint_and_seeded():
    from keras_vit.data import split_source, subset_source

    source = load_source("digits", "test")
    rest, held = split_source(source, 0.25, seed=1)
    rest_x, _ = rest.as_numpy()
    held_x, _ = held.as_numpy()
    assert (len(rest_x), len(held_x)) == (270, 90)
    all_x, _ = source.as_numpy()

    def key(images):
        return sorted(map(bytes, images.reshape(len(images), -1)))

    assert key(np.concatenate([rest_x, held_x])) == key(all_x)  # a partition of the split
    sub = subset_source(source, classes=(7, 3), per_class=5, seed=0)
    x, y = sub.as_numpy()
    assert sub.class_names == ("7", "3") and np.bincount(y).tolist() == [5, 5]
    again_x, _ = subset_source(source, classes=(7, 3), per_class=5, seed=0).as_numpy()
    np.testing.assert_array_equal(x, again_x)
    with pytest.raises(ValueError, match=r"distinct indices in \[0, 10\)"):
        subset_source(source, classes=(3, 3))
    with pytest.raises(ValueError, match=r"fewer than per_class=100"):
        subset_source(source, classes=(1,), per_class=100)
