"""Faces and non-faces from Labeled Faces in the Wild, as bundled with scikit-image: a second offline image set.

`skimage.data.lfw_subset()` ships 200 real 25x25 grey crops inside the
scikit-image wheel (nothing is downloaded): 100 faces chosen at random from
LFW and 100 background patches of the same photographs. Labels here are
0 = face, 1 = non-face. The held-out split is fixed: a stratified half
(100 images) chosen with `random_state=0`.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("face", "non-face")
TEST_FRACTION = 0.5
SPLIT_SEED = 0
SPLITS = ("train", "test")


def lfw_faces_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 25, 25, 1)` float32 in [0, 1] and int labels (0 face, 1 non-face) of the fixed `split`."""
    if split not in SPLITS:
        raise ValueError(f"lfw_faces has splits {SPLITS}. Received: split={split!r}")
    try:
        from skimage.data import lfw_subset
    except ImportError as error:
        raise ImportError("The LFW faces subset ships with scikit-image: pip install scikit-image") from error
    from sklearn.model_selection import train_test_split

    images = lfw_subset().astype("float32")[..., None]
    labels = np.repeat(np.arange(2), len(images) // 2)  # the first half are faces
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return (train_x, train_y) if split == "train" else (test_x, test_y)
