import numpy as np
import pytest

from keras_vit.data.lfw_faces import lfw_faces_arrays


def test_fixed_stratified_half_split_of_the_bundled_crops():
    from skimage.data import lfw_subset

    train_x, train_y = lfw_faces_arrays("train")
    test_x, test_y = lfw_faces_arrays("test")
    assert train_x.shape == test_x.shape == (100, 25, 25, 1) and train_x.dtype == np.float32
    assert np.bincount(train_y).tolist() == np.bincount(test_y).tolist() == [50, 50]
    # every bundled image lands in exactly one split, labelled by its half (faces first)
    everything = lfw_subset()
    for images, labels in ((train_x, train_y), (test_x, test_y)):
        flat = everything.reshape(200, -1).astype("float32")
        index = [int(np.flatnonzero((flat == image.reshape(-1)).all(axis=1))[0]) for image in images]
        assert labels.tolist() == [int(i >= 100) for i in index]
    again_x, again_y = lfw_faces_arrays("test")
    np.testing.assert_array_equal(again_x, test_x)
    np.testing.assert_array_equal(again_y, test_y)
    assert not set(map(bytes, train_x)) & set(map(bytes, test_x))


def test_bad_split_names_the_choices():
    with pytest.raises(ValueError, match=r"splits \('train', 'test'\)\. Received: split='val'"):
        lfw_faces_arrays("val")
