"""Resuming after a crash: exactly (`TrainingBackup`, `fit_resumable`) or by epoch (`AtomicBackupAndRestore`).

Exact resume. `TrainingBackup` saves the whole training state every
`every_steps` optimizer steps and at each epoch end: model variables (with the
seed-generator states of dropout and drop-path), optimizer variables (step,
moments, EMA), the running metric sums of the epoch, the position (epoch, step)
and the state of the callbacks that keep any (best value, patience counter and
best weights of early stopping, history rows). `fit_resumable` starts from the
newest backup: the data of the interrupted epoch resumes at the saved step
(the pipeline is a pure function of (seed, epoch, step), see
`keras_vit.data.make_pipeline(skip_batches=...)`), so a run killed at any
instant and rerun ends bitwise where an uninterrupted run ends.

Each backup is a folder `step-<global step>` written as a temporary folder,
fsynced and renamed; the previous one is kept. A backup that fails to read
(truncated, garbled: its checksum is checked) is skipped with a log line and
the previous one is used.

Epoch resume. `AtomicBackupAndRestore` is Keras's `BackupAndRestore` made
crash-safe (below); it restores weights and optimizer only.

Keras's `BackupAndRestore` overwrites `latest.weights.h5` in place and then
rewrites `training_metadata.json`. A SIGKILL inside either write leaves a
half-written file, and one between them pairs epoch `k + 1` weights with epoch
`k` metadata, so the resumed run trains an epoch twice. Here each backup is a
new weights file written under a temporary name and renamed, and the metadata
(epoch plus the weights file's name) is then replaced atomically: the metadata
is the commit point, and it always names a complete weights file of its epoch.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence

import keras
import numpy as np

from keras_vit.training.io import fsync_folder, write_failed

METADATA = "training_metadata.json"
STATE_ARRAYS = "state.npz"
STATE_INFO = "state.json"
DEFAULT_EVERY_STEPS = 200


def report(message: str) -> None:
    """A line on stderr (shown under absl's CLI too, which hides Python warnings-level logs by default)."""
    print(f"keras_vit: {message}", file=sys.stderr, flush=True)


class BackupError(ValueError):
    """No backup in the folder can be read, or a backup does not fit the model being trained."""


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a backup stands: `epoch` (0-based) and `step` optimizer steps into it; `stopped`: early-stopped."""

    epoch: int = 0
    step: int = 0
    stopped: bool = False


def state_variables(model: keras.Model) -> list:
    """Every variable a run's future depends on: model (seed generators included), optimizer, metric sums."""
    variables, seen = [], set()
    optimizer_variables = model.optimizer.variables if model.optimizer is not None else []
    for variable in [*model.variables, *optimizer_variables, *model.metrics_variables]:
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_synced(path: str, write: Callable) -> None:
    with open(path, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def write_backup(folder: str, name: str, info: dict, arrays: dict[str, np.ndarray]) -> str:
    """Writes backup `folder/name` atomically (temporary folder, fsync, rename); returns its path."""
    final = os.path.join(folder, name)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".tmp-{name}-{os.getpid()}")
    try:
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(temporary)
        _write_synced(os.path.join(temporary, STATE_ARRAYS), lambda file: np.savez(file, **arrays))
        info = dict(info, sha256=_sha256(os.path.join(temporary, STATE_ARRAYS)))
        _write_synced(os.path.join(temporary, STATE_INFO), lambda file: file.write(json.dumps(info).encode()))
        fsync_folder(temporary)
        if os.path.exists(final):  # a rerun that got exactly here before: same step, same state
            shutil.rmtree(final)
        os.replace(temporary, final)
        fsync_folder(folder)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        older = [path for path in list_backups(folder) if path != final]
        kept = f"The previous backup {older[0]} is intact." if older else "There was no earlier backup."
        raise write_failed(final, error, kept) from error
    return final


def read_backup(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(info, arrays) of a backup folder; raises `BackupError` when it is incomplete or corrupt."""
    try:
        with open(os.path.join(path, STATE_INFO), "rb") as file:
            info = json.loads(file.read())
        if _sha256(os.path.join(path, STATE_ARRAYS)) != info.get("sha256"):
            raise BackupError(f"{STATE_ARRAYS} does not match its checksum (truncated or altered)")
        with np.load(os.path.join(path, STATE_ARRAYS)) as arrays:
            return info, {key: arrays[key] for key in arrays.files}
    except BackupError:
        raise
    except Exception as error:  # any failure to parse means an unusable backup
        raise BackupError(f"{type(error).__name__}: {error}") from error


def list_backups(folder: str) -> list[str]:
    """Committed backup folders under `folder`, newest first."""
    return sorted(glob.glob(os.path.join(folder, "step-*")), reverse=True)


def newest_readable_backup(folder: str) -> tuple[str, dict, dict[str, np.ndarray]] | None:
    """(path, info, arrays) of the newest backup that reads; None when there is none.

    An unreadable backup is skipped with a log line naming the one used instead.
    Raises `BackupError` when there are backups but none can be read.
    """
    paths = list_backups(folder)
    for index, path in enumerate(paths):
        try:
            info, arrays = read_backup(path)
        except BackupError as error:
            older = paths[index + 1] if index + 1 < len(paths) else None
            fallback = f"falling back to the previous backup {older}" if older else "there is no older backup"
            report(f"Backup {path} is unreadable ({error}); {fallback}.")
            continue
        return path, info, arrays
    if paths:
        raise BackupError(
            f"No backup under {folder} can be read (tried {', '.join(paths)}). Remove {folder} to train from the start."
        )
    return None


def prune_backups(folder: str, keep: int) -> None:
    """Keeps the `keep` newest backups of `folder`; removes the temporary folders of killed writes (not ours)."""
    for path in list_backups(folder)[keep:]:
        shutil.rmtree(path, ignore_errors=True)
    for path in glob.glob(os.path.join(folder, ".tmp-*")):
        if not path.endswith(f"-{os.getpid()}"):
            shutil.rmtree(path, ignore_errors=True)


def _json_float(value):
    return float(value) if isinstance(value, (int, float, np.floating, np.integer)) else value


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backups survive SIGKILL at any point.

    Saves the model weights and optimizer state at each epoch end (or every
    `save_freq` batches) and restores them, and the epoch to start from, when
    `fit` starts again with the same `backup_dir`. Local paths only (atomic
    rename).

    Args:
        backup_dir: str. Folder owned by this run's backups.
        save_freq: "epoch" or int (batches). Defaults to "epoch".
        delete_checkpoint: bool. Remove the backups when `fit` finishes. Defaults to True.
    """

    def __init__(self, backup_dir: str, save_freq="epoch", delete_checkpoint: bool = True):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=False, delete_checkpoint=delete_checkpoint)
        self._metadata_path = os.path.join(backup_dir, METADATA)

    def read_metadata(self) -> dict | None:
        """The committed backup's metadata ({"epoch", "batch", "weights"}), or None when there is none."""
        if not os.path.exists(self._metadata_path):
            return None
        with open(self._metadata_path) as file:
            metadata = json.load(file)
        if "weights" not in metadata:
            raise ValueError(
                f"{self._metadata_path} was not written by AtomicBackupAndRestore (no 'weights' entry). "
                f"Use an empty backup_dir for each run. Received: backup_dir={self.backup_dir!r}"
            )
        return metadata

    def _load_model(self):
        if not self.model.built:
            raise ValueError(
                "AtomicBackupAndRestore needs a built model before fit(): call it on a batch first. "
                f"Received: model {self.model.name!r} (unbuilt)"
            )
        metadata = self.read_metadata()
        if metadata is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, metadata["weights"]))
        self.model._initial_epoch = metadata["epoch"]

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        previous = self.read_metadata()
        counter = (previous or {}).get("counter", -1) + 1
        name = f"backup-{counter:06d}.weights.h5"
        temporary = os.path.join(self.backup_dir, f".tmp-{os.getpid()}-{name}")
        self.model.save_weights(temporary, overwrite=True)
        os.replace(temporary, os.path.join(self.backup_dir, name))
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name, "counter": counter}
        temporary = os.path.join(self.backup_dir, f".tmp-{os.getpid()}-{METADATA}")
        with open(temporary, "w") as file:
            json.dump(metadata, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self._metadata_path)
        # only now is the older backup unreferenced; also clear leftovers of a killed write
        for path in glob.glob(os.path.join(self.backup_dir, "backup-*.weights.h5")):
            if os.path.basename(path) != name:
                os.remove(path)
        for path in glob.glob(os.path.join(self.backup_dir, ".tmp-*")):
            if not os.path.basename(path).startswith(f".tmp-{os.getpid()}-"):
                os.remove(path)


class TrainingBackup(keras.callbacks.Callback):
    """Backs up the whole training state often, so `fit_resumable` resumes a killed run exactly.

    Put it last in the callback list: it saves after the other callbacks have
    updated their state at an epoch end, and restores theirs after they reset
    themselves at `on_train_begin`.

    Args:
        backup_dir: str. Folder owned by this run's backups (local disk: atomic rename).
        every_steps: int. Optimizer steps between backups inside an epoch (one
            more at every epoch end). Defaults to `DEFAULT_EVERY_STEPS`.
        callbacks: callbacks whose state is saved too: each has
            `resume_state() -> (json-able dict, list of arrays)` and
            `restore_resume_state(info, arrays)`.
        keep: int. Newest backups kept (>= 2, so a corrupt newest one has a fallback). Defaults to 2.
    """

    def __init__(
        self, backup_dir: str, every_steps: int = DEFAULT_EVERY_STEPS, callbacks: Sequence = (), keep: int = 2
    ):
        super().__init__()
        if not isinstance(every_steps, int) or isinstance(every_steps, bool) or every_steps < 1:
            raise ValueError(f"`every_steps` must be a positive int. Received: every_steps={every_steps!r}")
        if not isinstance(keep, int) or keep < 2:
            raise ValueError(
                f"`keep` must be an int >= 2 (the fallback needs one older backup). Received: keep={keep!r}"
            )
        for callback in callbacks:
            if not (hasattr(callback, "resume_state") and hasattr(callback, "restore_resume_state")):
                raise ValueError(
                    f"{type(callback).__name__} keeps no resumable state: give it `resume_state()` and "
                    "`restore_resume_state(info, arrays)`, or leave it out of `callbacks`."
                )
        self.backup_dir = backup_dir
        self.every_steps = every_steps
        self.callbacks = list(callbacks)
        self.keep = keep
        self._selected = None  # (path, info, arrays) chosen by `find`
        self._carried = None  # callback states carried from one `fit` call to the next
        self._pending_metrics = []
        self._offset = 0
        self._final = True
        self._epoch = 0
        self._last_saved = 0
        self._last_path = None

    # ---- choosing a backup -----------------------------------------------------------------
    def find(self) -> Position:
        """Chooses the newest readable backup (unreadable ones are logged and skipped); its position.

        Returns `Position()` when there is no backup. Raises `BackupError` when there
        are backups but none can be read.
        """
        self._carried = None
        self._selected = newest_readable_backup(self.backup_dir)
        if self._selected is None:
            return Position()
        info = self._selected[1]
        return Position(info["epoch"], info["step"], info["stopped"])

    def set_fit_call(self, step_offset: int, final: bool) -> None:
        """Told by `fit_resumable` before each `fit`: the step its first epoch starts at; whether it is the last."""
        self._offset, self._final = step_offset, final

    def delete(self) -> None:
        """Removes every backup (the run has finished and its results are written)."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)

    # ---- state -----------------------------------------------------------------------------
    def _callback_states(self) -> tuple[list[dict], list[list[np.ndarray]]]:
        states = [callback.resume_state() for callback in self.callbacks]
        return [info for info, _ in states], [list(arrays) for _, arrays in states]

    def _restore_callbacks(self, infos: list[dict], arrays: list[list[np.ndarray]]) -> None:
        for callback, info, values in zip(self.callbacks, infos, arrays):
            callback.restore_resume_state(info, values)

    def _save(self, epoch: int, step: int) -> None:
        variables = state_variables(self.model)
        arrays = {f"v{i}": keras.ops.convert_to_numpy(variable) for i, variable in enumerate(variables)}
        infos, callback_arrays = self._callback_states()
        for j, values in enumerate(callback_arrays):
            arrays.update({f"c{j}_{k}": value for k, value in enumerate(values)})
        info = {
            "epoch": epoch,
            "step": step,
            "stopped": bool(self.model.stop_training),
            "global_step": self._global_step(),
            "variables": [[variable.path, list(variable.shape)] for variable in variables],
            "callbacks": infos,
            "callback_arrays": [len(values) for values in callback_arrays],
        }
        self._last_path = write_backup(self.backup_dir, f"step-{epoch:06d}-{step:09d}", info, arrays)
        self._last_saved = info["global_step"]
        prune_backups(self.backup_dir, self.keep)

    def _restore(self, path: str, info: dict, arrays: dict[str, np.ndarray]) -> None:
        variables = state_variables(self.model)
        expected = [list(variable.shape) for variable in variables]
        if [shape for _, shape in info["variables"]] != expected:
            raise BackupError(
                f"Backup {path} holds {len(info['variables'])} variables that do not match the "
                f"{len(expected)} of the model being trained: it belongs to another model or recipe. "
                f"Use a new run folder, or remove {self.backup_dir} to train from the start."
            )
        metrics = {id(variable) for variable in self.model.metrics_variables}
        self._pending_metrics = []
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"v{i}"])
            if id(variable) in metrics and info["step"]:  # an epoch-end backup's sums belong to the epoch before
                self._pending_metrics.append((variable, arrays[f"v{i}"]))
        callback_arrays = [
            [arrays[f"c{j}_{k}"] for k in range(count)] for j, count in enumerate(info["callback_arrays"])
        ]
        self._restore_callbacks(info["callbacks"], callback_arrays)
        self._last_saved = self._global_step()
        report(f"Resuming from backup {path} (epoch {info['epoch'] + 1}, step {info['step']}).")

    def _global_step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    # ---- callback hooks ----------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        if self._selected is not None:
            self._restore(*self._selected)
            self._selected = None
        elif self._carried is not None:
            self._restore_callbacks(*self._carried)
        self._last_saved = self._global_step()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        for variable, value in self._pending_metrics:  # `fit` reset the metrics just before this
            variable.assign(value)
        self._pending_metrics = []

    def on_train_batch_end(self, batch, logs=None):
        step = self._offset + batch + 1
        if step >= self._offset + self.params["steps"]:
            return  # the epoch end saves
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return  # never back up a diverged state
        if self._global_step() - self._last_saved >= self.every_steps:
            self._save(self._epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, 0)
        self._offset = 0

    def on_train_end(self, logs=None):
        self._carried = self._callback_states()
        if not self._final and not self.model.stop_training and self._last_path is not None:
            # `fit` ended by putting the optimizer's EMA into the model (`finalize_variable_values`); the next
            # `fit` call of this run continues from the state at the epoch end, as an uninterrupted run does
            _, arrays = read_backup(self._last_path)
            for i, variable in enumerate(state_variables(self.model)):
                variable.assign(arrays[f"v{i}"])


def _build_metrics(model: keras.Model, data) -> None:
    """Builds the compiled metrics (Keras defers it to the first step) so their saved sums can be restored."""
    if all(getattr(m, "built", True) for m in model.metrics) and model.optimizer.built:
        return
    batch = next(iter(data.take(1)))
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=batch)  # Keras's own pre-fit build, as under a distribution strategy


def fit_resumable(
    model: keras.Model,
    data_for_epoch: Callable,
    *,
    epochs: int,
    steps_per_epoch: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    validation_data=None,
    verbose="auto",
) -> None:
    """`model.fit` for `epochs`, resuming exactly from the `TrainingBackup` among `callbacks`.

    Args:
        model: compiled model.
        data_for_epoch: `(epoch, skip_batches) -> tf.data.Dataset` of that epoch's
            batches from `skip_batches` on, a pure function of its arguments
            (e.g. `make_pipeline(..., seed=f(seed, epoch), skip_batches=skip)`).
        epochs: total epochs, counting those already backed up.
        steps_per_epoch: batches per epoch.
        callbacks: `fit` callbacks; at most one `TrainingBackup`, placed last.
        validation_data, verbose: as for `fit`.

    A run resumed mid-epoch calls `fit` twice (the rest of that epoch, then the
    other epochs), so callbacks see `on_train_begin`/`on_train_end` twice;
    callbacks with `set_fit_call(step_offset, final)` are told which call is which.
    """
    backups = [callback for callback in callbacks if isinstance(callback, TrainingBackup)]
    if len(backups) > 1:
        raise ValueError(f"Pass at most one TrainingBackup. Received: {len(backups)} in callbacks")
    if backups and callbacks[-1] is not backups[0]:
        raise ValueError("Put the TrainingBackup last in `callbacks`: it saves the other callbacks' state.")
    position = backups[0].find() if backups else Position()
    if position != Position():
        _build_metrics(model, data_for_epoch(position.epoch))

    def fit(first: int, last: int, skip: int) -> None:
        steps = steps_per_epoch - skip
        parts = [data_for_epoch(epoch, skip if epoch == first else 0) for epoch in range(first, max(last, first + 1))]
        stream = parts[0].take(steps)
        for part in parts[1:]:
            stream = stream.concatenate(part.take(steps_per_epoch))
        for callback in callbacks:
            if hasattr(callback, "set_fit_call"):
                callback.set_fit_call(skip, final=last >= epochs or last == first)
        model.fit(
            stream,
            initial_epoch=first,
            epochs=last,
            steps_per_epoch=steps,
            validation_data=validation_data,
            callbacks=list(callbacks),
            verbose=verbose,
            shuffle=False,
        )

    epoch = position.epoch
    if position.stopped or epoch >= epochs:
        fit(epoch, epoch, 0)  # no epoch left: restores the state and runs the callbacks' train-end work
        return
    if position.step:
        fit(epoch, epoch + 1, position.step)  # the rest of the interrupted epoch
        epoch += 1
        if model.stop_training:
            return
    if epoch < epochs:
        fit(epoch, epochs, 0)
