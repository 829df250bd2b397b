"""Training program for tests/training/test_resume.py: tiny ViT on digits with crash-safe backups.

Usage: python resume_script.py RUN_DIR [--batch-delay SECONDS]
Writes RUN_DIR/progress (last finished epoch) and, when done, RUN_DIR/final.npz.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import time

import keras
from sklearn.datasets import load_digits

import keras_vit
from keras_vit.training.multi_worker import save_weights_npz
from keras_vit.training.resume import AtomicBackupAndRestore

EPOCHS = 6


class Progress(keras.callbacks.Callback):
    """Records finished epochs (after the backup callback ran) and slows batches so a kill lands mid-epoch."""

    def __init__(self, path, delay):
        super().__init__()
        self.path, self.delay = path, delay

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.delay)

    def on_epoch_end(self, epoch, logs=None):
        with open(self.path, "a") as file:
            file.write(f"{epoch + 1}\n")


def main(run_dir, delay):
    digits = load_digits()
    images = ((digits.images[:512] / 16.0 - 0.3050) / 0.3761).astype("float32")[..., None]
    labels = digits.target[:512].astype("int32")
    keras.utils.set_random_seed(0)
    model = keras_vit.ViT(
        image_size=8, patch_size=2, num_channels=1, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=10
    )
    model.compile(
        keras.optimizers.SGD(0.02, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    callbacks = [
        AtomicBackupAndRestore(os.path.join(run_dir, "backup")),
        Progress(os.path.join(run_dir, "progress"), delay),
    ]
    model.fit(images, labels, batch_size=64, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
    save_weights_npz(model, os.path.join(run_dir, "final.npz"))


if __name__ == "__main__":
    delay = float(sys.argv[sys.argv.index("--batch-delay") + 1]) if "--batch-delay" in sys.argv else 0.0
    main(sys.argv[1], delay)
