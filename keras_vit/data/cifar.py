"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html).

Read from a local copy in either official layout, or downloaded through
`keras.datasets` when no directory is given:

- binary: `cifar-10-batches-bin/data_batch_{1..5}.bin`, `test_batch.bin`
  (records of 1 label byte + 3,072 pixel bytes) and
  `cifar-100-binary/{train,test}.bin` (coarse byte, fine byte, 3,072 pixels);
- python: `cifar-10-batches-py/data_batch_{1..5}`, `test_batch` and
  `cifar-100-python/{train,test}` (pickled dicts with b"data" and b"labels" or
  b"fine_labels"/b"coarse_labels").

Pixels are stored plane by plane (1,024 red, then green, then blue, rows in
order); they are returned as `(N, 32, 32, 3)` uint8.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from keras_vit.data.sources import ImageSource, array_source

PIXELS = 32 * 32 * 3
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_LAYOUTS = {
    "cifar10": {
        "binary": (
            "cifar-10-batches-bin",
            {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
        ),
        "python": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}),
    },
    "cifar100": {
        "binary": ("cifar-100-binary", {"train": ["train.bin"], "test": ["test.bin"]}),
        "python": ("cifar-100-python", {"train": ["train"], "test": ["test"]}),
    },
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's dicts of bytes, lists and numpy arrays, and refuses anything else (no code runs)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR batch files hold only arrays and lists; refusing {module}.{name}")


def _load_pickle(path: str) -> dict:
    try:
        with open(path, "rb") as file:
            return _ArraysOnlyUnpickler(file, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path} is not a CIFAR python batch file ({error}). Re-extract the archive.") from None


def find_layout(data_dir: str, name: str) -> tuple[str, str]:
    """Finds a local CIFAR copy under `data_dir`: returns (layout, folder) with layout "binary" or "python"."""
    if name not in _LAYOUTS:
        raise ValueError(f"Unknown CIFAR data set. Expected one of {sorted(_LAYOUTS)}. Received: name={name!r}")
    if not os.path.isdir(data_dir):
        raise ValueError(
            f"CIFAR data directory {data_dir!r} does not exist. Pass the folder holding the extracted "
            f"archive, or no data_dir to download {name} through keras.datasets."
        )
    for layout, (folder, files) in _LAYOUTS[name].items():
        for candidate in (os.path.join(data_dir, folder), data_dir):
            if all(os.path.isfile(os.path.join(candidate, f)) for f in files["train"] + files["test"]):
                return layout, candidate
    expected = " or ".join(
        f"{folder}/{{{', '.join(files['train'] + files['test'])}}}" for folder, files in _LAYOUTS[name].values()
    )
    raise ValueError(f"No {name} copy found under {data_dir!r}. Expected the official layout: {expected}.")


def _read_binary(path: str, label_bytes: int, label_index: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + PIXELS
    if raw.size == 0 or raw.size % record:
        raise ValueError(
            f"{path} holds {raw.size} bytes, not a whole number of {record}-byte CIFAR records "
            f"({label_bytes} label byte(s) + {PIXELS} pixels). The file is truncated or not CIFAR."
        )
    raw = raw.reshape(-1, record)
    labels = raw[:, label_index].astype("int32")
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_python(path: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path} lacks b'data' or {label_key!r} (found {keys}); not a CIFAR python batch.")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != PIXELS:
        raise ValueError(f"{path}: b'data' has shape {data.shape}, expected (N, {PIXELS}).")
    labels = np.asarray(batch[label_key], dtype="int32")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _class_names(name: str, layout: str, folder: str, label_mode: str) -> tuple[str, ...]:
    count = 10 if name == "cifar10" else (20 if label_mode == "coarse" else 100)
    if name == "cifar10":
        path = os.path.join(folder, "batches.meta.txt" if layout == "binary" else "batches.meta")
    elif layout == "binary":
        path = os.path.join(folder, f"{label_mode}_label_names.txt")
    else:
        path = os.path.join(folder, "meta")
    if os.path.isfile(path):
        if layout == "binary":
            with open(path) as file:
                names = tuple(line.strip() for line in file if line.strip())
        else:
            meta = _load_pickle(path)
            key = b"label_names" if name == "cifar10" else f"{label_mode}_label_names".encode()
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(key, []))
        if len(names) == count:
            return names
    return CIFAR10_CLASSES if name == "cifar10" else tuple(str(i) for i in range(count))


def cifar_arrays(
    name: str, split: str, data_dir: str | None = None, label_mode: str = "fine"
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images `(N, 32, 32, 3)` uint8, int32 labels and class names of a CIFAR split.

    Args:
        name: "cifar10" or "cifar100".
        split: "train" or "test".
        data_dir: folder holding a local copy (either official layout); None
            downloads through `keras.datasets` (needs the network once).
        label_mode: CIFAR-100 labels, "fine" (100 classes) or "coarse" (20).
    """
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR has splits ('train', 'test'). Received: split={split!r}")
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"`label_mode` must be 'fine' or 'coarse'. Received: label_mode={label_mode!r}")
    if data_dir is None:
        import keras

        module = keras.datasets.cifar10 if name == "cifar10" else keras.datasets.cifar100
        kwargs = {} if name == "cifar10" else {"label_mode": label_mode}
        (train_x, train_y), (test_x, test_y) = module.load_data(**kwargs)
        images, labels = (train_x, train_y) if split == "train" else (test_x, test_y)
        count = 10 if name == "cifar10" else (20 if label_mode == "coarse" else 100)
        names = CIFAR10_CLASSES if name == "cifar10" else tuple(str(i) for i in range(count))
        return images, labels.reshape(-1).astype("int32"), names
    layout, folder = find_layout(data_dir, name)
    files = _LAYOUTS[name][layout][1][split]
    parts = []
    for file in files:
        path = os.path.join(folder, file)
        if layout == "binary":
            label_bytes = 1 if name == "cifar10" else 2
            parts.append(_read_binary(path, label_bytes, 0 if name == "cifar10" or label_mode == "coarse" else 1))
        else:
            key = b"labels" if name == "cifar10" else f"{label_mode}_labels".encode()
            parts.append(_read_python(path, key))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, _class_names(name, layout, folder, label_mode)


def load_cifar_source(
    name: str, split: str = "train", data_dir: str | None = None, label_mode: str = "fine"
) -> ImageSource:
    """A CIFAR split as an `ImageSource`; see `cifar_arrays` for the arguments."""
    images, labels, names = cifar_arrays(name, split, data_dir, label_mode)
    return array_source(name, split, images, labels, names, scale=255.0)
