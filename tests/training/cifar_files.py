"""Tiny CIFAR-10 files in the official binary layout, for the resume tests (no download)."""

import os

import numpy as np


def write_cifar10(root: str, per_file: int = 40, seed: int = 0) -> str:
    """Writes `cifar-10-batches-bin/` under `root` (5 train files, 1 test file) and returns `root`."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-bin")
    os.makedirs(folder, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_file).astype(np.uint8)
        images = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
        planes = images.transpose(0, 3, 1, 2).reshape(per_file, -1)  # 1024 red, 1024 green, 1024 blue
        np.concatenate([labels[:, None], planes], axis=1).tofile(os.path.join(folder, name + ".bin"))
    with open(os.path.join(folder, "batches.meta.txt"), "w") as file:
        file.write("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    return root
