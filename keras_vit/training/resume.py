"""Crash-safe `BackupAndRestore`: a run killed at any instant resumes from its last finished epoch.

Keras's `BackupAndRestore` overwrites `latest.weights.h5` in place and then
rewrites `training_metadata.json`. A SIGKILL inside either write leaves a
half-written file, and one between them pairs epoch `k + 1` weights with epoch
`k` metadata, so the resumed run trains an epoch twice. Here each backup is a
new weights file written under a temporary name and renamed, and the metadata
(epoch plus the weights file's name) is then replaced atomically: the metadata
is the commit point, and it always names a complete weights file of its epoch.
"""

from __future__ import annotations

import glob
import json
import os

import keras

METADATA = "training_metadata.json"


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
