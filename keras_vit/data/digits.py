"""The handwritten digits that ship inside scikit-learn: the offline default data set.

1,797 real 8x8 grey images of the digits 0-9 (UCI "optical recognition of
handwritten digits", test part), pixel values 0-16. Nothing is downloaded.
The held-out split is fixed: a stratified 20% (360 images) chosen with
`random_state=0`, so every run and every test sees the same test images.
"""

from __future__ import annotations

import numpy as np

from keras_vit.data.sources import ImageSource, array_source

TEST_FRACTION = 0.2
SPLIT_SEED = 0
SPLITS = ("train", "test")


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 8, 8, 1)` uint8 in 0..16 and int labels of the fixed `split` ("train" or "test")."""
    if split not in SPLITS:
        raise ValueError(f"digits has splits {SPLITS}. Received: split={split!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = data.images.astype("uint8")[..., None]
    train_x, test_x, train_y, test_y = train_test_split(
        images, data.target, test_size=TEST_FRACTION, stratify=data.target, random_state=SPLIT_SEED
    )
    return (train_x, train_y) if split == "train" else (test_x, test_y)


def load_digits_source(split: str = "train") -> ImageSource:
    """The digits `split` as an `ImageSource` (pixels scaled from 0..16 to [0, 1])."""
    images, labels = digits_arrays(split)
    return array_source("digits", split, images, labels, class_names=range(10), scale=16.0)
