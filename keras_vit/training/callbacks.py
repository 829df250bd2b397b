"""Callbacks of a training run: checkpoints, logs, early stopping, EMA swapping, resumption, NaN guard.

Everything a run writes goes under its run folder:

    run_dir/checkpoints/last.keras   every epoch (atomic)
    run_dir/checkpoints/best.keras   when the monitored metric improves (atomic; with validation)
    run_dir/history.csv              one row per epoch (rewritten atomically; exact after a resume)
    run_dir/tensorboard/             TensorBoard scalars
    run_dir/backup/                  `TrainingBackup` state: rerun the same command to resume exactly

The callbacks that keep state across epochs (`AtomicCheckpoint`, `HistoryLog`,
`ResumableEarlyStopping`) hand it to `TrainingBackup` through
`resume_state()` / `restore_resume_state(info, arrays)`.
"""

from __future__ import annotations

import csv
import io
import math
import os

import keras
import numpy as np

from keras_vit.training.io import atomic_path, save_model
from keras_vit.training.resume import DEFAULT_EVERY_STEPS, TrainingBackup


def _float_or_none(value):
    return None if value is None else float(value)


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

    def resume_state(self):
        return {"best": float(self.best)}, []

    def restore_resume_state(self, info, arrays):
        self.best = info["best"]


class HistoryLog(keras.callbacks.Callback):
    """Writes `path` (CSV: epoch, then the logs sorted) with one row per epoch, rewritten atomically.

    Unlike `CSVLogger`, its rows belong to the training state: after a resume
    the file holds each epoch once, with the values an uninterrupted run logs
    (written with `repr`, so they read back bitwise).
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.rows: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": int(epoch), **{key: float(value) for key, value in (logs or {}).items()}}
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        keys = ["epoch", *sorted({key for r in self.rows for key in r} - {"epoch"})]
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(keys)
        for r in self.rows:
            writer.writerow([repr(r[key]) if key in r else "" for key in keys])
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as file:
            file.write(text.getvalue())

    def resume_state(self):
        return {"rows": self.rows}, []

    def restore_resume_state(self, info, arrays):
        self.rows = [dict(row) for row in info["rows"]]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` whose counters and best weights are part of a `TrainingBackup`.

    Restores the best weights only when training really ends (not between the
    two `fit` calls of a run resumed mid-epoch, see `fit_resumable`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._final = True

    def set_fit_call(self, step_offset: int, final: bool) -> None:
        self._final = final

    def on_train_end(self, logs=None):
        if self._final or self.model.stop_training:
            super().on_train_end(logs)

    def resume_state(self):
        info = {
            "wait": int(self.wait),
            "stopped_epoch": int(self.stopped_epoch),
            "best": _float_or_none(self.best),
            "best_epoch": int(self.best_epoch),
            "has_best_weights": self.best_weights is not None,
        }
        return info, list(self.best_weights or [])

    def restore_resume_state(self, info, arrays):
        self.wait, self.stopped_epoch, self.best_epoch = info["wait"], info["stopped_epoch"], info["best_epoch"]
        self.best = info["best"]
        self.best_weights = [np.asarray(a) for a in arrays] if info["has_best_weights"] else None


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training with `NonFiniteLossError` naming the epoch and step where the loss became NaN or inf.

    Put it first among the callbacks: the error leaves every checkpoint and
    backup as it was before that step (`TrainingBackup` also never saves a
    non-finite state).
    """

    def __init__(self):
        super().__init__()
        self._epoch, self._offset = 0, 0

    def set_fit_call(self, step_offset: int, final: bool) -> None:
        self._offset = step_offset

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            steps = self._offset + self.params["steps"]
            raise NonFiniteLossError(
                f"The training loss is {float(loss)} at epoch {self._epoch + 1}, step {self._offset + batch + 1} "
                f"of {steps}: training stopped. Checkpoints and backups from before this step are kept. "
                "Lower the learning rate, set clip_norm, or check the data; rerunning resumes from the last backup."
            )

    def on_epoch_end(self, epoch, logs=None):
        self._offset = 0


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
    backup_every_steps: int = DEFAULT_EVERY_STEPS,
    tensorboard: bool = True,
) -> list[keras.callbacks.Callback]:
    """The standard callbacks of a run under `run_dir` (see the module docstring).

    Args:
        run_dir: the run folder.
        has_validation: whether `fit` gets validation data (best checkpoint, early stopping).
        monitor: metric for the best checkpoint and early stopping.
        early_stopping_patience: epochs without improvement before stopping (None: off).
        ema: validate with the optimizer's EMA weights (`SwapEMAWeights`).
        backup: `TrainingBackup` (last in the list), so a killed run resumes exactly
            (through `keras_vit.training.fit_resumable`).
        backup_every_steps: optimizer steps between backups inside an epoch.
        tensorboard: write TensorBoard logs (when the `tensorboard` package is installed).
    """
    if early_stopping_patience is not None and not has_validation:
        raise ValueError(
            "Early stopping needs validation data: set a validation fraction (val_fraction > 0) or "
            "early_stopping_patience=None."
        )
    checkpoints = os.path.join(run_dir, "checkpoints")
    callbacks: list[keras.callbacks.Callback] = [StopOnNonFiniteLoss()]
    if ema:
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
    stateful = [AtomicCheckpoint(os.path.join(checkpoints, "last.keras"))]
    if has_validation:
        stateful.append(AtomicCheckpoint(os.path.join(checkpoints, "best.keras"), monitor=monitor))
    stateful.append(HistoryLog(os.path.join(run_dir, "history.csv")))
    callbacks += stateful
    if tensorboard and _has_tensorboard():
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False, profile_batch=0)
        )
    if early_stopping_patience is not None:
        stateful.append(
            ResumableEarlyStopping(
                monitor=monitor,
                patience=early_stopping_patience,
                mode="max" if "acc" in monitor else "min",
                restore_best_weights=True,
            )
        )
        callbacks.append(stateful[-1])
    if backup:
        callbacks.append(TrainingBackup(os.path.join(run_dir, "backup"), backup_every_steps, callbacks=stateful))
    return callbacks
