"""Attention pictures of trained ViTs on real images: digits and photographs, offline.

    python examples/visualize_attention.py --out docs/images           # the README's pictures
    python examples/visualize_attention.py --model runs/<run>/model.keras
    python examples/visualize_attention.py --smoke --out /tmp/vis      # seconds, for CI

Two trained models, nothing downloaded:

* digits: the default recipe's model (`keras-vit train`, a `vit_digits_patch2_8` on
  scikit-learn's 8x8 digits). Given with --model, or found as the newest
  `runs/digits_vit-*/model.keras`; otherwise the same architecture is trained
  here for a few epochs (with a CSVLogger, whose log is plotted).
* photographs: the photographs that ship with scikit-learn (china, flower) and
  scikit-image (astronaut, chelsea the cat, coffee). A small ViT with 2 register
  tokens on a non-square 48x72 input is trained here (2,000 random crops, 6
  epochs, a few minutes on a CPU) to tell the five photographs apart; its
  attention is then drawn at 96x144 (position embeddings resampled by
  `with_image_size`).

The last line says whether every picture was written; the exit status is 1 if
not. `--smoke` trains a narrower photo model on fewer crops (pictures only).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from PIL import Image

import keras_vit
from keras_vit import visualize
from keras_vit.visualize.figures import publish

DIGITS = "vit_digits_patch2_8"
PHOTO_SIZE = (48, 72)
DRAW_SIZE = (96, 144)


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn digits as [0, 1] floats, split as the default recipe does (stratified 20%, seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images / 16.0).astype("float32")[..., None]
    return train_test_split(images, data.target, test_size=0.2, stratify=data.target, random_state=0)


def normalise(pixels: np.ndarray, name: str = DIGITS) -> np.ndarray:
    spec = keras_vit.model_spec(name)
    return ((pixels - np.asarray(spec.mean, "float32")) / np.asarray(spec.std, "float32")).astype("float32")


def compile_model(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def recipe_run(model_flag: str | None) -> tuple[str, str | None] | None:
    """(model file, its run's history.csv or None) of the default recipe, if one is available."""
    if model_flag:
        path = model_flag
    else:
        found = sorted(glob.glob(os.path.join("runs", "digits_vit-*", "model.keras")), key=os.path.getmtime)
        if not found:
            return None
        path = found[-1]
    # The run folder holds history.csv; a checkpoint sits one level deeper (checkpoints/).
    folder = os.path.dirname(os.path.abspath(path))
    for history in (os.path.join(folder, "history.csv"), os.path.join(os.path.dirname(folder), "history.csv")):
        if os.path.isfile(history):
            return path, history
    return path, None


def digits_model(args, workdir: str) -> tuple[keras.Model, str, str]:
    """The recipe's trained digits model, or one trained here; returns (model, training log, where from)."""
    run = recipe_run(args.model)
    if run is not None:
        model = keras.saving.load_model(run[0], compile=False)
        if getattr(model, "config", None) is not None and tuple(model.config.image_size) == (8, 8):
            print(f"digits model: {run[0]} (default recipe)")
            return model, run[1], run[0]
        print(f"{run[0]} is not an 8x8 digits ViT; training one here instead.")
    train_x, _, train_y, _ = digits_split()
    epochs = 1 if args.smoke else args.digits_epochs
    count = 256 if args.smoke else len(train_x)
    log = os.path.join(workdir, "digits_history.csv")
    keras.utils.set_random_seed(0)
    model = compile_model(keras_vit.ViT(DIGITS), 2e-3)
    start = time.time()
    model.fit(
        normalise(train_x[:count]),
        train_y[:count],
        validation_split=0.1,
        epochs=epochs,
        batch_size=32,
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(log)],
    )
    print(f"digits model: {DIGITS} trained here for {epochs} epochs in {time.time() - start:.0f} s")
    return model, log, "trained in this example"


def photographs() -> list[tuple[str, np.ndarray]]:
    """Real photographs shipped inside scikit-learn and scikit-image (no download)."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    return [
        ("china", load_sample_image("china.jpg")),
        ("flower", load_sample_image("flower.jpg")),
        ("astronaut", skimage.data.astronaut()),
        ("chelsea", skimage.data.chelsea()),
        ("coffee", skimage.data.coffee()),
    ]


def random_crops(photos: list[np.ndarray], count: int, size: tuple[int, int], seed: int = 0):
    """Random resized crops (30-100% of the area, the input's aspect ratio) with flips, labelled by photo."""
    rng = np.random.default_rng(seed)
    height, width = size
    images, labels = np.zeros((count, height, width, 3), "uint8"), rng.integers(0, len(photos), count)
    for index, label in enumerate(labels):
        photo = photos[label]
        area = rng.uniform(0.3, 1.0) * photo.shape[0] * photo.shape[1]
        crop_h = int(min(photo.shape[0], np.sqrt(area * height / width)))
        crop_w = int(min(photo.shape[1], crop_h * width / height))
        top, left = rng.integers(0, photo.shape[0] - crop_h + 1), rng.integers(0, photo.shape[1] - crop_w + 1)
        crop = Image.fromarray(photo[top : top + crop_h, left : left + crop_w]).resize(
            (width, height), Image.Resampling.BILINEAR
        )
        images[index] = np.asarray(crop)[:, ::-1] if rng.random() < 0.5 else np.asarray(crop)
    return images, labels


def photo_model(photos: list[np.ndarray], smoke: bool) -> keras.Model:
    """A small ViT with register tokens, trained to tell the photographs apart."""
    keras.utils.set_random_seed(0)
    width = 32 if smoke else 96  # --smoke: a narrow model (the figures need 4 blocks), fewer crops
    model = compile_model(
        keras_vit.ViT(
            image_size=PHOTO_SIZE,
            patch_size=6,
            hidden_dim=width,
            depth=4,
            num_heads=4,
            mlp_dim=2 * width,
            num_register_tokens=2,
            num_classes=len(photos),
        ),
        1e-3,
    )
    images, labels = random_crops(photos, 128 if smoke else 2000, PHOTO_SIZE)
    inputs, _ = visualize.prepare_images(list(images), PHOTO_SIZE)  # mean = std = 0.5
    start = time.time()
    history = model.fit(inputs, labels, epochs=1 if smoke else 6, batch_size=64, verbose=0)
    print(
        f"photo model: trained for {len(history.epoch)} epochs in {time.time() - start:.0f} s, "
        f"final training accuracy {history.history['accuracy'][-1]:.3f}"
    )
    return model


def compact_png(path: str) -> None:
    """Palette-quantises a written PNG (256 colours) so the README's pictures stay small; atomic."""
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=os.path.dirname(path))
    os.close(handle)
    small.save(temporary, format="PNG", optimize=True)
    publish(temporary, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/images", help="folder for the PNG files")
    parser.add_argument("--model", default=None, help="the default recipe's digits model (.keras)")
    parser.add_argument("--digits_epochs", type=int, default=15, help="epochs when training digits here")
    parser.add_argument("--smoke", action="store_true", help="tiny training, for a quick check")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as workdir:
        # ---- digits: the default recipe's model --------------------------------------------
        model, log, source = digits_model(args, workdir)
        _, test_x, _, test_y = digits_split()
        inputs = normalise(test_x[:8])
        accuracy = float(np.mean(np.argmax(model.predict(normalise(test_x), verbose=0), -1) == test_y))
        print(f"digits test accuracy: {accuracy:.3f} ({source})")
        cached = visualize.run_intermediates(model, inputs)
        written += [
            visualize.plot_attention_rollout(
                model, inputs[:4], os.path.join(args.out, "digits_rollout.png"), display_images=test_x[:4], panel_px=120
            )["path"]
        ]
        written += [
            visualize.plot_mean_attention_distance(
                model, inputs, os.path.join(args.out, "digits_distance.png"), intermediates=cached
            )["path"]
        ]
        written += [
            visualize.plot_position_embedding_similarity(
                model, os.path.join(args.out, "digits_position_similarity.png"), width_px=480, height_px=420
            )["path"]
        ]
        if log:
            written += [
                visualize.plot_training_curves(
                    log, os.path.join(args.out, "digits_training_curves.png"), panel_px=(320, 240)
                )["path"]
            ]

        # ---- photographs: non-square input, register tokens, resized position embeddings ----
        named = photographs()
        names, photos = [n for n, _ in named], [p for _, p in named]
        model = photo_model(photos, args.smoke)
        big = model.with_image_size(DRAW_SIZE)
        inputs, display = visualize.prepare_images(photos, DRAW_SIZE)
        predicted = np.argmax(big.predict(inputs, verbose=0), -1)
        print("photo model at 96x144 predicts:", [names[i] for i in predicted], "for", names)
        _, drawn = visualize.prepare_images(photos, (192, 288))  # sharper pictures under the maps
        cached = visualize.run_intermediates(big, inputs)
        written += [
            visualize.plot_attention_rollout(
                big,
                inputs,
                os.path.join(args.out, "photos_rollout.png"),
                display_images=drawn,
                panel_px=130,
                discard_ratio=0.5,
                intermediates=cached,
            )["path"]
        ]
        written += [
            visualize.plot_attention_heads(
                big,
                inputs,
                os.path.join(args.out, "photos_heads.png"),
                index=3,
                display_images=drawn,
                columns=5,
                panel_px=130,
                intermediates=cached,
            )["path"]
        ]
        written += [
            visualize.plot_mean_attention_distance(
                big, inputs, os.path.join(args.out, "photos_distance.png"), intermediates=cached
            )["path"]
        ]
        written += [
            visualize.plot_position_embedding_similarity(
                model, os.path.join(args.out, "photos_position_similarity.png")
            )["path"]
        ]
        written += [
            visualize.plot_activation_statistics(
                big,
                inputs,
                os.path.join(args.out, "photos_activations.png"),
                index=3,
                width_px=900,
                height_px=640,
                intermediates=cached,
            )["path"]
        ]
    for path in written:
        compact_png(path)
        print(f"{path}  {os.path.getsize(path) / 1024:.0f} KB")
    # The script's own check: every picture was written as a non-empty PNG.
    pictures = [path for path in written if os.path.isfile(path) and os.path.getsize(path) > 0]
    passed = len(pictures) == len(written) and len(written) >= 8
    print(f"check: wrote {len(pictures)} of {len(written)} pictures to {args.out}: {passed}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
