"""Train a small ViT from scratch on CIFAR-10 with the `cifar10_vit_scratch` recipe.

    python examples/train_cifar10.py                          # downloads CIFAR-10 through Keras (once)
    python examples/train_cifar10.py --data_dir ~/data        # a local copy: cifar-10-batches-{bin,py}/
    python examples/train_cifar10.py --strategy mirrored --batch_size 256 --mixed_precision
    python examples/train_cifar10.py --smoke                  # seconds; see below

`--smoke` checks the whole path (reader, augmentation, model, fit, evaluate)
in seconds. Without `--data_dir` it writes a few SYNTHETIC random images in the
official CIFAR-10 binary layout to a temporary folder, so it runs offline; its
accuracy means nothing. The full recipe takes hours on a GPU (100 epochs).
The last line says whether the run folder holds `model.keras` and
`metrics.json` with a finite test loss (and, outside --smoke, accuracy above
chance); the exit status is 1 if not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import keras_vit.recipes as recipes


def write_synthetic_cifar10(root: str, per_file: int = 64, seed: int = 0) -> str:
    """Random pixels and labels in the official binary layout (for --smoke only; not real data)."""
    folder = os.path.join(root, "cifar-10-batches-bin")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, (per_file, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        np.concatenate([labels, pixels], axis=1).tofile(os.path.join(folder, name))
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=None, help="local CIFAR-10 copy (default: download through Keras)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument(
        "--mixed_precision",
        action="store_true",
        help="force mixed precision (default: the recipe's 'auto', bfloat16 where it is faster)",
    )
    parser.add_argument("--run_dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="seconds, offline (synthetic data without --data_dir)")
    args = parser.parse_args()
    overrides = dict(
        strategy=args.strategy, mixed_precision=True if args.mixed_precision else "auto", data_dir=args.data_dir
    )
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    if args.smoke:
        if args.data_dir is None:
            overrides["data_dir"] = write_synthetic_cifar10(tempfile.mkdtemp(prefix="cifar10_synthetic_"))
            print(f"--smoke: synthetic random CIFAR-format data in {overrides['data_dir']} (accuracy is meaningless)")
        overrides.update(
            model_overrides=dict(depth=1, hidden_dim=32, num_heads=2, mlp_dim=64),
            epochs=1,
            steps_per_epoch=2,
            batch_size=32,
            tensorboard=False,
            run_dir=args.run_dir or tempfile.mkdtemp(prefix="cifar10_smoke_run_"),
        )
    result = recipes.run("cifar10_vit_scratch", verbose=2, **overrides)
    print({k: v for k, v in result.metrics.items() if k.startswith("test_")}, "->", result.run_dir)
    # The script's own check: the run folder holds the trained model and its metrics, and the loss is finite
    # (after the two --smoke steps accuracy means nothing, so it is not checked there).
    written = {name: os.path.isfile(os.path.join(result.run_dir, name)) for name in ("model.keras", "metrics.json")}
    passed = all(written.values()) and bool(np.isfinite(result.metrics["test_loss"]))
    real_run = not args.smoke  # a full run on real CIFAR-10 must also beat chance
    if real_run:
        passed = passed and result.metrics["test_accuracy"] > 0.1
    print(
        f"check: wrote {', '.join(n for n, ok in written.items() if ok)} in {result.run_dir}; finite test loss"
        f"{' and accuracy above chance (0.10)' if real_run else ''}: {passed}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
