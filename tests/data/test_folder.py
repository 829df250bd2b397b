"""Image folders with real JPEG/PNG files written here."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vit.data import load_source


def _write(path, image, kind):
    data = tf.io.encode_png(image) if kind == "png" else tf.io.encode_jpeg(image, quality=95)
    path.write_bytes(data.numpy())


def _folder(root, classes=("cat", "dog"), per_class=3, size=(12, 10)):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                image = np.full((*size, 3), 40 * c + 5 * i, np.uint8) + rng.integers(0, 3, (*size, 3), dtype=np.uint8)
                _write(root / split / name / f"{i}.{'png' if i % 2 else 'jpg'}", image, "png" if i % 2 else "jpg")
    (root / "train" / "cat" / "notes.txt").write_text("not an image, ignored")
    return root


def test_reads_classes_labels_and_pixels(tmp_path):
    root = _folder(tmp_path)
    source = load_source("folder", "train", str(root))
    assert source.class_names == ("cat", "dog") and source.num_examples == 6
    images, labels = source.as_numpy()
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images.shape == (6, 12, 10, 3) and images.dtype == np.float32
    png = tf.io.decode_png(tf.io.read_file(str(root / "train" / "dog" / "1.png"))).numpy() / 255.0
    np.testing.assert_allclose(images[4], png, atol=1e-6)  # PNG is lossless
    grey = load_source("folder", "val", str(root), num_channels=1)
    assert grey.as_numpy()[0].shape == (6, 12, 10, 1)


def test_empty_class_folder_is_named(tmp_path):
    root = _folder(tmp_path)
    (root / "train" / "bird").mkdir()
    (root / "val" / "bird").mkdir()
    with pytest.raises(ValueError, match=r"Class folder '.*train/bird' holds no JPEG or PNG images"):
        load_source("folder", "train", str(root))


def test_corrupt_image_is_named(tmp_path):
    root = _folder(tmp_path)
    bad = root / "train" / "dog" / "2.jpg"
    bad.write_bytes(b"this is not a jpeg at all")
    with pytest.raises(ValueError, match=r"Corrupt or unsupported image '.*dog/2\.jpg': not a JPEG or PNG"):
        load_source("folder", "train", str(root))


def test_truncated_image_is_named_by_full_verification(tmp_path):
    root = _folder(tmp_path, size=(64, 64))
    good = root / "train" / "cat" / "0.jpg"
    good.write_bytes(good.read_bytes()[:200])  # valid header, missing data
    with pytest.raises(ValueError, match=r"Corrupt image '.*cat/0\.jpg': it does not decode"):
        load_source("folder", "train", str(root))
    load_source("folder", "train", str(root), verify="header")  # the header check alone lets it through


def test_unchecked_corrupt_file_is_named_by_the_pipeline(tmp_path):
    root = _folder(tmp_path)
    (root / "train" / "dog" / "2.jpg").write_bytes(b"garbage")
    source = load_source("folder", "train", str(root), verify="none")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"dog/2\.jpg"):
        source.as_numpy()


def test_split_layout_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_source("folder", "train", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="needs data_dir"):
        load_source("folder", "train")
    root = _folder(tmp_path)
    (root / "val" / "dog").rename(root / "val" / "wolf")
    with pytest.raises(ValueError, match=r"missing \['dog'\], extra \['wolf'\]"):
        load_source("folder", "val", str(root))
