"""CIFAR readers on tiny files written here in the official binary and python layouts."""

import os
import pickle

import numpy as np
import pytest

from keras_vit.data import cifar_arrays, load_source


def _images(count, offset):
    rng = np.random.default_rng(offset)
    return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def _planes(images):
    """HWC images -> the official 3072-byte rows: 1024 red, 1024 green, 1024 blue, rows in order."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _write_cifar10(root, layout, per_file=3):
    expected = {"train": ([], []), "test": ([], [])}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder = os.path.join(root, "cifar-10-batches-bin" if layout == "binary" else "cifar-10-batches-py")
    os.makedirs(folder)
    for index, name in enumerate(names):
        images, labels = _images(per_file, index), (np.arange(per_file) + index) % 10
        split = "test" if name == "test_batch" else "train"
        expected[split][0].append(images)
        expected[split][1].append(labels)
        if layout == "binary":
            records = np.concatenate([labels[:, None].astype(np.uint8), _planes(images)], axis=1)
            records.tofile(os.path.join(folder, name + ".bin"))
        else:
            with open(os.path.join(folder, name), "wb") as file:
                pickle.dump(
                    {
                        b"batch_label": name.encode(),
                        b"labels": labels.tolist(),
                        b"data": _planes(images),
                        b"filenames": [b"x.png"] * per_file,
                    },
                    file,
                    protocol=2,
                )
    if layout == "binary":
        with open(os.path.join(folder, "batches.meta.txt"), "w") as file:
            file.write("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    else:
        with open(os.path.join(folder, "batches.meta"), "wb") as file:
            pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, file, protocol=2)
    return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in expected.items()}


@pytest.mark.parametrize("layout", ["binary", "python"])
def test_cifar10_layouts(tmp_path, layout):
    expected = _write_cifar10(str(tmp_path), layout)
    for split in ("train", "test"):
        images, labels, names = cifar_arrays("cifar10", split, str(tmp_path))
        np.testing.assert_array_equal(images, expected[split][0])
        np.testing.assert_array_equal(labels, expected[split][1])
        assert names == tuple(f"class{i}" for i in range(10))
    source = load_source("cifar10", "test", str(tmp_path))
    x, y = source.as_numpy()
    np.testing.assert_allclose(x, expected["test"][0] / 255.0, atol=1e-6)
    assert source.num_classes == 10 and source.num_examples == 3


@pytest.mark.parametrize("layout", ["binary", "python"])
@pytest.mark.parametrize("label_mode", ["fine", "coarse"])
def test_cifar100_layouts(tmp_path, layout, label_mode):
    rng = np.random.default_rng(1)
    data = {}
    for split in ("train", "test"):
        images = _images(4, len(split))
        data[split] = (images, rng.integers(0, 20, 4), rng.integers(0, 100, 4))
    if layout == "binary":
        folder = tmp_path / "cifar-100-binary"
        folder.mkdir()
        for split, (images, coarse, fine) in data.items():
            records = np.concatenate([coarse[:, None], fine[:, None], _planes(images)], axis=1).astype(np.uint8)
            records.tofile(str(folder / f"{split}.bin"))
    else:
        folder = tmp_path / "cifar-100-python"
        folder.mkdir()
        for split, (images, coarse, fine) in data.items():
            with open(folder / split, "wb") as file:
                pickle.dump(
                    {b"data": _planes(images), b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()},
                    file,
                    protocol=2,
                )
    for split, (images, coarse, fine) in data.items():
        got_images, got_labels, names = cifar_arrays("cifar100", split, str(tmp_path), label_mode)
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, fine if label_mode == "fine" else coarse)
        assert len(names) == (100 if label_mode == "fine" else 20)


def test_pixel_planes_map_to_channels(tmp_path):
    # one image: red plane 10, green 20, blue 30, with a marker in the red plane at row 1, column 2
    record = np.concatenate([[3], np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    record[1 + 32 * 1 + 2] = 99
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        record.tofile(str(folder / name))
    images, labels, _ = cifar_arrays("cifar10", "test", str(tmp_path))
    assert labels.tolist() == [3]
    assert images[0, 0, 0].tolist() == [10, 20, 30] and images[0, 1, 2].tolist() == [99, 20, 30]


def test_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        cifar_arrays("cifar10", "train", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"No cifar10 copy found under .*cifar-10-batches-bin"):
        cifar_arrays("cifar10", "train", str(tmp_path))
    _write_cifar10(str(tmp_path), "binary")
    truncated = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    truncated.write_bytes(truncated.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"data_batch_3\.bin holds .* not a whole number of 3073-byte"):
        cifar_arrays("cifar10", "train", str(tmp_path))


def test_python_batches_refuse_code(tmp_path):
    _write_cifar10(str(tmp_path), "python")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as file:
        pickle.dump({b"data": Evil(), b"labels": []}, file)
    with pytest.raises(ValueError, match=r"test_batch is not a CIFAR python batch file .*refusing"):
        cifar_arrays("cifar10", "test", str(tmp_path))
