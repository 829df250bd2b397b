"""Fine-tune a ViT from a published checkpoint file: linear probe, then full fine-tuning with layer decay.

    # a catalogued name downloads once (the AugReg ViT-Ti/16 .npz), then trains on the offline digits at 64 px
    python examples/finetune_checkpoint.py --checkpoint vit_tiny_patch16_224.augreg_in21k_ft_in1k --image_size 64
    # your own file: timm/Hugging Face `.safetensors` or the original ViT `.npz`; --model names its architecture
    python examples/finetune_checkpoint.py --checkpoint ViT-B_16.npz --model vit_base_patch16_224 --image_size 96
    # CIFAR-10 from a local copy (cifar-10-batches-{bin,py}/ under --data_dir) at the checkpoint's own size
    python examples/finetune_checkpoint.py --checkpoint model.safetensors --model vit_small_patch16_224 \
        --data_dir ~/data
    python examples/finetune_checkpoint.py --smoke    # under a minute on a CPU, offline: writes its own checkpoint

Steps: `keras_vit.ViT(model, weights=checkpoint, image_size=..., num_classes=10)`
reads the file (position embeddings resampled to the new size, the 1000-class
head replaced by a fresh 10-class one), the `linear_probe` recipe trains the
new head on the frozen backbone, and the `vit_finetune` recipe then trains
everything with layer-wise learning-rate decay. Both stages report held-out
accuracy; the script exits with status 1 when the final accuracy is not above
chance.

Without --data_dir the data is scikit-learn's real 8x8 handwritten digits
(1,797 images, its fixed stratified 20% held out), written as grey PNGs to an
image folder and upscaled to RGB by the recipe's pipeline, so nothing is
downloaded. `--smoke` first trains a tiny ViT for a few seconds on the digits
0-4 at 16 px and writes it as a timm-keyed `.safetensors` file (the format of
timm's Hugging Face checkpoints), then fine-tunes it to all ten digits at 32 px.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from PIL import Image

import keras_vit
from keras_vit import recipes
from keras_vit.data import digits_arrays
from keras_vit.weights import CHECKPOINTS, read_checkpoint, save_weights

SMOKE_MODEL = "vit_tiny_patch16_224"
SMOKE_ARCH = dict(patch_size=4, hidden_dim=32, depth=2, num_heads=2, mlp_dim=64)


def write_digits_folder(root: str) -> str:
    """The digits' fixed train/test split as grey PNGs in `root/{train,test}/<digit>/` (an image folder)."""
    for split in ("train", "test"):
        images, labels = digits_arrays(split)
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = os.path.join(root, split, str(label))
            os.makedirs(folder, exist_ok=True)
            Image.fromarray((image[..., 0].astype("float32") * 255.0 / 16.0).round().astype("uint8")).save(
                os.path.join(folder, f"{index:04d}.png")
            )
    return root


def write_smoke_checkpoint(path: str, epochs: int = 3) -> str:
    """Trains a tiny ViT briefly on the digits 0-4 (16 px, RGB) and writes it as a timm `.safetensors` file."""
    images, labels = digits_arrays("train")
    keep = labels < 5
    pixels = np.repeat(images[keep].astype("float32") / 16.0, 3, axis=-1)
    pixels = keras.ops.convert_to_numpy(keras.ops.image.resize(pixels, (16, 16)))
    spec = keras_vit.model_spec(SMOKE_MODEL)
    pixels = (pixels - np.asarray(spec.mean, "float32")) / np.asarray(spec.std, "float32")
    keras.utils.set_random_seed(0)
    model = keras_vit.ViT(SMOKE_MODEL, image_size=16, num_classes=5, **SMOKE_ARCH)
    model.compile(
        keras.optimizers.AdamW(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    history = model.fit(pixels, labels[keep], batch_size=32, epochs=epochs, verbose=0)
    save_weights(model, path)
    keys = sorted(read_checkpoint(path).state)
    print(
        f"--smoke: wrote {path} ({len(keys)} timm keys, e.g. {keys[0]!r}); pretrained on digits 0-4 to "
        f"training accuracy {history.history['accuracy'][-1]:.3f}"
    )
    return path


def resolve_model(checkpoint: str, model: str | None) -> tuple[str, dict]:
    """(registered name, extra architecture arguments) for a checkpoint file or catalogued name."""
    if checkpoint in CHECKPOINTS and not os.path.exists(checkpoint):
        entry = CHECKPOINTS[checkpoint]
        arch = {k: v for k, v in entry.arch.items() if k != "num_classes"}
        return model or entry.model, arch
    if not os.path.isfile(checkpoint):
        raise SystemExit(
            f"--checkpoint {checkpoint!r} is neither a file nor a catalogued name "
            "(keras_vit.weights.list_checkpoints())."
        )
    if model is None:
        raise SystemExit(
            f"Pass --model, the registered architecture of {checkpoint!r} (e.g. vit_base_patch16_224; "
            "see keras_vit.list_models())."
        )
    return model, {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a .safetensors/.npz file, or a name from list_checkpoints()")
    parser.add_argument("--model", help="registered architecture of the file (e.g. vit_base_patch16_224)")
    parser.add_argument("--image_size", type=int, default=None, help="fine-tuning size (default: the model's)")
    parser.add_argument("--data_dir", default=None, help="local CIFAR-10 copy (default: the offline digits)")
    parser.add_argument("--probe_epochs", type=int, default=3)
    parser.add_argument("--finetune_epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01, help="peak SGD rate of fine-tuning")
    parser.add_argument("--layer_decay", type=float, default=0.75, help="layer-wise lr decay of fine-tuning")
    parser.add_argument("--run_dir", default=None, help="where the two run folders go (default: temporary)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny checkpoint written here, a few epochs (under a minute)"
    )
    args = parser.parse_args()
    root = args.run_dir or tempfile.mkdtemp(prefix="keras_vit_finetune_")
    overrides: dict = {}
    if args.smoke:
        args.checkpoint = write_smoke_checkpoint(os.path.join(root, "tiny_vit.safetensors"))
        args.model, args.image_size, overrides = SMOKE_MODEL, args.image_size or 32, dict(SMOKE_ARCH)
        args.probe_epochs, args.finetune_epochs = min(args.probe_epochs, 2), min(args.finetune_epochs, 3)
    elif not args.checkpoint:
        parser.error("pass --checkpoint (a file or a catalogued name), or --smoke")
    args.model, arch = resolve_model(args.checkpoint, args.model)
    overrides.update(arch)
    image_size = args.image_size or keras_vit.model_spec(args.model).input_size[0]

    if args.data_dir:
        data = dict(dataset="cifar10", data_dir=args.data_dir)  # the recipes' own CIFAR-10 augmentation
    else:
        data = dict(
            dataset="folder",
            data_dir=write_digits_folder(os.path.join(root, "digits")),
            eval_split="test",
            crop="resize",
            hflip=False,
        )  # a flipped or cropped digit is another digit, or none

    # 1. Read the published file into a 10-class model at the fine-tuning size.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras_vit.ViT(args.model, weights=args.checkpoint, image_size=image_size, num_classes=10, **overrides)
    for warning in caught:
        print(f"loading note: {warning.message}")
    pretrained = os.path.join(root, "pretrained.keras")
    model.save(pretrained)
    print(f"loaded {args.checkpoint} into {args.model} at {image_size} px ({model.count_params():,} parameters)")

    # 2. Linear probe: frozen backbone, only the new head trains.
    common = dict(
        model=args.model,
        model_overrides=overrides,
        image_size=image_size,
        batch_size=args.batch_size,
        base_batch_size=None,
        tensorboard=False,
        verbose=2,
        **data,
    )
    probe = recipes.run(
        "linear_probe",
        init_from=pretrained,
        epochs=args.probe_epochs,
        lr=0.1,
        run_dir=os.path.join(root, "probe"),
        **common,
    )
    # 3. Full fine-tuning from the probe, lower blocks moving less (layer decay).
    finetune = recipes.run(
        "vit_finetune",
        init_from=os.path.join(probe.run_dir, "model.keras"),
        epochs=args.finetune_epochs,
        lr=args.lr,
        layer_decay=args.layer_decay,
        warmup_epochs=min(1, args.finetune_epochs),
        run_dir=os.path.join(root, "finetune"),
        **common,
    )

    chance = 1.0 / len(finetune.metrics["class_names"])
    accuracy = finetune.metrics["test_accuracy"]
    print(f"linear probe test accuracy {probe.metrics['test_accuracy']:.4f}; run folders under {root}")
    passed = accuracy > chance
    print(f"check: fine-tuned test accuracy {accuracy:.4f} above chance ({chance:.4f}): {passed}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
