"""Callbacks of a training run: checkpoints, logs, early stopping, EMA swapping, resumption.

Everything a run writes goes under its run folder:

    run_dir/checkpoints/last.keras   every epoch (atomic)
    run_dir/checkpoints/best.keras   when the monitored metric improves (atomic; with validation)
    run_dir/history.csv              one row per epoch (CSVLogger, appended across resumes)
    run_dir/tensorboard/             TensorBoard scalars
    run_dir/backup/                  BackupAndRestore state: rerun the same command to resume
"""

from __future__ import annotations

import math
import os

import keras

from keras_vit.training.io import save_model
from keras_vit.training.resume import AtomicBackupAndRestore


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the model as `.keras` at epoch ends through a temporary file and a rename.

    Args:
        path: target `.keras` file.
        monitor: metric deciding "best" (e.g. "val_accuracy"); None saves every epoch.
        mode: "max" or "min" for `monitor`. Defaults to "max" for accuracies, else "min".
    """

    def __init__(self, path: str, monitor: str | None = None, mode: str | None = None):
        super().__init__()
        if not path.endswith(".keras"):
            raise ValueError(f"Checkpoint paths end in '.keras'. Received: path={path!r}")
        self.path = path
        self.monitor = monitor
        self.mode = mode or ("max" if monitor and "acc" in monitor else "min")
        if self.mode not in ("max", "min"):
            raise ValueError(f"`mode` must be 'max' or 'min'. Received: mode={mode!r}")
        self.best = -math.inf if self.mode == "max" else math.inf

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if value is None:
                return
            better = value > self.best if self.mode == "max" else value < self.best
            if not better:
                return
            self.best = value
        save_model(self.model, self.path)


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def build_callbacks(
    run_dir: str,
    *,
    has_validation: bool,
    monitor: str = "val_accuracy",
    early_stopping_patience: int | None = None,
    ema: bool = False,
    backup: bool = True,
    tensorboard: bool = True,
) -> list[keras.callbacks.Callback]:
    """The standard callbacks of a run under `run_dir` (see the module docstring).

    Args:
        run_dir: the run folder.
        has_validation: whether `fit` gets validation data (best checkpoint, early stopping).
        monitor: metric for the best checkpoint and early stopping.
        early_stopping_patience: epochs without improvement before stopping (None: off).
        ema: validate with the optimizer's EMA weights (`SwapEMAWeights`).
        backup: `BackupAndRestore` so a killed run resumes from its last epoch.
        tensorboard: write TensorBoard logs (when the `tensorboard` package is installed).
    """
    if early_stopping_patience is not None and not has_validation:
        raise ValueError(
            "Early stopping needs validation data: set a validation fraction (val_fraction > 0) or "
            "early_stopping_patience=None."
        )
    checkpoints = os.path.join(run_dir, "checkpoints")
    callbacks: list[keras.callbacks.Callback] = []
    if backup:
        callbacks.append(AtomicBackupAndRestore(os.path.join(run_dir, "backup"), delete_checkpoint=True))
    if ema:
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
    callbacks.append(AtomicCheckpoint(os.path.join(checkpoints, "last.keras")))
    if has_validation:
        callbacks.append(AtomicCheckpoint(os.path.join(checkpoints, "best.keras"), monitor=monitor))
    callbacks.append(keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True))
    if tensorboard and _has_tensorboard():
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False, profile_batch=0)
        )
    if early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                patience=early_stopping_patience,
                mode="max" if "acc" in monitor else "min",
                restore_best_weights=True,
            )
        )
    return callbacks
