"""Files a docs reader brings (published checkpoints, a photo, data, a run log), written locally in their formats.

Nothing is downloaded: each writer produces a file in the layout its publisher
uses, with seeded random weights, so the docs' code reads it exactly as it
would read the real file. Checkpoints come from the reference libraries where
one exists (timm writes the `.safetensors`), and the JAX `.npz` follows the
published Flax names and shapes (the layout `tests/parity/test_npz_parity.py`
checks against timm's own `.npz` loader).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from tests.vit_npz_layout import original_vit_arrays

# The AugReg ViT-Ti/16 file name, as google-research/vision_transformer publishes it.
AUGREG_TI16 = "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_vit_npz(
    path: str | os.PathLike,
    *,
    dim: int,
    depth: int,
    heads: int,
    mlp: int,
    patch: int,
    grid: int,
    classes: int,
    seed: int = 0,
) -> str:
    """Writes random weights in the original ViT / AugReg `.npz` layout (Flax names, `(in, out)` kernels)."""
    w = original_vit_arrays(
        np.random.default_rng(seed), dim=dim, depth=depth, heads=heads, mlp=mlp, patch=patch, grid=grid, classes=classes
    )
    with open(path, "wb") as f:
        np.savez(f, **w)
    return str(path)


def write_augreg_ti16(folder: str | os.PathLike, name: str = AUGREG_TI16) -> str:
    """The AugReg ViT-Ti/16 ImageNet-1k file (224 px, 14x14 grid, 1000 classes), by default under its published name."""
    return write_vit_npz(Path(folder) / name, dim=192, depth=12, heads=3, mlp=768, patch=16, grid=14, classes=1000)


def write_timm_safetensors(path: str | os.PathLike, timm_name: str) -> str:
    """`model.safetensors` as timm publishes it: the state dict of timm's own model, seeded random weights."""
    import timm  # torch/timm are imported before TensorFlow by tests/conftest.py
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(timm_name, pretrained=False)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def write_catalogue_file(cache_dir: str | os.PathLike, name: str) -> str:
    """Puts a catalogued checkpoint where `download_checkpoint` finds it (`$KERAS_VIT_CACHE/keras_vit/<file>`)."""
    from keras_vit.weights import checkpoint_info

    entry = checkpoint_info(name)
    folder = Path(cache_dir) / "keras_vit"
    folder.mkdir(parents=True, exist_ok=True)
    if entry.format != "safetensors":
        raise ValueError(f"Only safetensors catalogue entries are written here. Received: {name!r}")
    return write_timm_safetensors(folder / entry.file_name, name.split(".")[0])


def write_photo(path: str | os.PathLike) -> str:
    """A real photograph (scikit-image's `chelsea`, a cat) as a JPEG."""
    from PIL import Image
    from skimage import data

    Image.fromarray(data.chelsea()).save(path, quality=90)
    return str(path)


def write_cifar10(root: str | os.PathLike, per_file: int = 8, seed: int = 0) -> str:
    """A small CIFAR-10 copy in the official python layout (`cifar-10-batches-py/`), random pixels."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        images = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
        labels = ((np.arange(per_file) + index) % 10).tolist()
        rows = images.transpose(0, 3, 1, 2).reshape(per_file, -1)  # 1024 red, 1024 green, 1024 blue
        with open(folder / name, "wb") as f:
            pickle.dump(
                {b"batch_label": name.encode(), b"labels": labels, b"data": rows, b"filenames": [b"x.png"] * per_file},
                f,
                protocol=2,
            )
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES]}, f, protocol=2)
    return str(root)


def write_digits_history(path: str | os.PathLike) -> str:
    """A real `history.csv`: Keras's `CSVLogger` over 3 epochs of a tiny ViT on scikit-learn's digits."""
    import keras
    from sklearn.datasets import load_digits

    import keras_vit

    digits = load_digits()
    x = (digits.images[:256] / 16.0)[..., None].astype("float32")
    model = keras_vit.ViT(
        image_size=8, patch_size=2, num_channels=1, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32, num_classes=10
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    model.fit(
        x,
        digits.target[:256],
        validation_split=0.25,
        epochs=3,
        batch_size=64,
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(path))],
    )
    return str(path)


def prepare_for_python_block(code: str, folder: str | os.PathLike, cache_dir: str | os.PathLike) -> list[str]:
    """Writes the files `code` names that a reader would already have; returns what was written."""
    folder = Path(folder)
    written = []
    if AUGREG_TI16 in code:
        written.append(write_augreg_ti16(folder))
    if '"model.safetensors"' in code:
        written.append(write_timm_safetensors(folder / "model.safetensors", "vit_tiny_patch16_224"))
    if "checkpoint_info(" in code:
        import re

        for name in re.findall(r'checkpoint_info\("([^"]+)"\)', code):
            written.append(write_catalogue_file(cache_dir, name))
    if '"cat.jpg"' in code:
        written.append(write_photo(folder / "cat.jpg"))
    if "runs/digits/history.csv" in code:
        written.append(write_digits_history(folder / "runs" / "digits" / "history.csv"))
    return written
