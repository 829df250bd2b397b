"""Exact resume in one process: crash anywhere, resume, and match an uninterrupted run bitwise.

The crash is an exception raised from a callback at a chosen optimizer step
(the SIGKILL version, with real processes, is in test_resume_kill.py).
"""

import errno
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit.training import (
    BackupError,
    CheckpointWriteError,
    NonFiniteLossError,
    TrainingBackup,
    build_callbacks,
    fit_resumable,
)
from keras_vit.training.resume import list_backups, read_backup, state_variables

EPOCHS, STEPS, BATCH = 3, 8, 4


def make_data(poison_at=None):
    """(epoch, skip) -> that epoch's batches (a pure function), and validation batches.

    poison_at: (epoch, step) whose batch gets NaN features, or None.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, 6)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, STEPS * BATCH), 3).astype("float32")

    def data_for_epoch(epoch, skip_batches=0):
        order = np.random.default_rng([7, epoch]).permutation(len(x))
        features = x[order].copy()
        if poison_at is not None and poison_at[0] == epoch:
            features[poison_at[1] * BATCH : (poison_at[1] + 1) * BATCH] = np.nan
        return tf.data.Dataset.from_tensor_slices((features, y[order])).batch(BATCH).skip(skip_batches)

    return data_for_epoch, tf.data.Dataset.from_tensor_slices((x[:8], y[:8])).batch(BATCH)


def make_model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, activation="gelu"), keras.layers.Dropout(0.3), keras.layers.Dense(3)]
    )
    model.compile(
        keras.optimizers.AdamW(keras.optimizers.schedules.CosineDecay(1e-2, EPOCHS * STEPS), use_ema=True),
        keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


class Crash(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.at_step:
            raise KeyboardInterrupt(f"crash at step {self.at_step}")


def train(run_dir, crash_at=None, poison_at=None, every_steps=3):
    model = make_model()
    data_for_epoch, val = make_data(poison_at)
    callbacks = build_callbacks(
        str(run_dir),
        has_validation=True,
        monitor="val_accuracy",
        early_stopping_patience=EPOCHS,
        ema=True,
        backup_every_steps=every_steps,
        tensorboard=False,
    )
    if crash_at is not None:
        callbacks.insert(0, Crash(crash_at))
    fit_resumable(
        model, data_for_epoch, epochs=EPOCHS, steps_per_epoch=STEPS, callbacks=callbacks, validation_data=val, verbose=0
    )
    return model


def state(model):
    return [keras.ops.convert_to_numpy(v) for v in state_variables(model)]


def assert_same_run(dir_a, model_a, dir_b, model_b):
    for a, b in zip(state(model_a), state(model_b), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (dir_a / "history.csv").read_bytes() == (dir_b / "history.csv").read_bytes()
    for name in ("last.keras", "best.keras"):
        saved_a = keras.saving.load_model(dir_a / "checkpoints" / name, compile=False).get_weights()
        saved_b = keras.saving.load_model(dir_b / "checkpoints" / name, compile=False).get_weights()
        for a, b in zip(saved_a, saved_b, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    return run_dir, train(run_dir)


def test_two_uninterrupted_runs_are_equal(reference, tmp_path):
    assert_same_run(*reference, tmp_path, train(tmp_path))
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert len(history) == EPOCHS + 1 and history[0].startswith("epoch,accuracy,loss")


@pytest.mark.parametrize("crashes", [[5], [8], [13, 14], [4, 9, 20]], ids=["mid-epoch", "epoch-end", "twice", "thrice"])
def test_crash_and_resume_matches_the_uninterrupted_run(reference, tmp_path, crashes):
    for step in crashes:
        with pytest.raises(KeyboardInterrupt):
            train(tmp_path, crash_at=step)
        assert list_backups(str(tmp_path / "backup"))
    assert_same_run(*reference, tmp_path, train(tmp_path))


def test_backups_keep_the_previous_one_and_record_the_position(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, crash_at=12)
    backups = list_backups(str(tmp_path / "backup"))
    assert [os.path.basename(p) for p in backups] == ["step-000001-000000003", "step-000001-000000000"]
    info, arrays = read_backup(backups[0])
    assert (info["epoch"], info["step"], info["global_step"]) == (1, 3, 11)
    assert not [name for name in os.listdir(tmp_path / "backup") if name.startswith(".tmp")]


@pytest.mark.parametrize("damage", ["truncate", "garble", "bad_json"])
def test_a_corrupt_newest_backup_falls_back_to_the_previous_one(reference, tmp_path, capsys, damage):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, crash_at=12)
    newest, previous = list_backups(str(tmp_path / "backup"))
    arrays = os.path.join(newest, "state.npz")
    if damage == "truncate":
        os.truncate(arrays, os.path.getsize(arrays) // 2)
    elif damage == "garble":
        with open(arrays, "r+b") as file:
            file.seek(os.path.getsize(arrays) // 2)
            file.write(b"\x00garbage\xff")
    else:
        with open(os.path.join(newest, "state.json"), "w") as file:
            file.write('{"epoch": 1, "st')
    capsys.readouterr()
    model = train(tmp_path)
    log = capsys.readouterr().err
    assert f"Backup {newest} is unreadable" in log
    assert f"falling back to the previous backup {previous}." in log and f"Resuming from backup {previous}" in log
    assert_same_run(*reference, tmp_path, model)


def test_no_readable_backup_is_an_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, crash_at=11)
    for path in list_backups(str(tmp_path / "backup")):
        os.truncate(os.path.join(path, "state.npz"), 10)
    with pytest.raises(BackupError, match="No backup under .* can be read.*Remove"):
        train(tmp_path)


def test_a_backup_of_another_model_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, crash_at=5)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile("adam", "mse")
    backup = TrainingBackup(str(tmp_path / "backup"))
    data = tf.data.Dataset.from_tensor_slices((np.zeros((8, 6)), np.zeros((8, 3)))).batch(4)
    with pytest.raises(BackupError, match="do not match"):
        fit_resumable(model, lambda e, s=0: data.skip(s), epochs=2, steps_per_epoch=2, callbacks=[backup], verbose=0)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_backup(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, step 6 of 8"):
        train(tmp_path, poison_at=(1, 5))
    backups = list_backups(str(tmp_path / "backup"))
    info, arrays = read_backup(backups[0])
    assert info["global_step"] <= STEPS + 5  # before the poisoned step (the 14th)
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")
    last = keras.saving.load_model(tmp_path / "checkpoints" / "last.keras", compile=False)
    assert all(np.isfinite(w).all() for w in last.get_weights())


def test_a_full_disk_during_a_backup_stops_the_run_and_keeps_the_previous_backup(reference, tmp_path, monkeypatch):
    real_savez = np.savez
    calls = []

    def savez_until_the_disk_fills(file, **arrays):
        calls.append(1)
        if len(calls) == 4:  # the 4th backup: half written, then ENOSPC
            file.write(b"PK\x03\x04partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_savez(file, **arrays)

    monkeypatch.setattr(np, "savez", savez_until_the_disk_fills)
    with pytest.raises(
        CheckpointWriteError, match=r"Could not write .*step-.*No space left on device.*previous backup"
    ):
        train(tmp_path)
    monkeypatch.setattr(np, "savez", real_savez)
    backups = list_backups(str(tmp_path / "backup"))
    read_backup(backups[0])  # loadable
    assert not [name for name in os.listdir(tmp_path / "backup") if name.startswith(".tmp")]
    assert_same_run(*reference, tmp_path, train(tmp_path))  # rerun after freeing space: exact


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_file(tmp_path, monkeypatch):
    from keras_vit.training import AtomicCheckpoint

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, crash_at=9)
    last = tmp_path / "checkpoints" / "last.keras"
    before = last.read_bytes()

    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"PK partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(keras.Model, "save", full_disk)
    checkpoint = AtomicCheckpoint(str(last))
    checkpoint.set_model(make_model())
    with pytest.raises(CheckpointWriteError, match=r"last\.keras: \[Errno 28\] No space left on device.*unchanged"):
        checkpoint.on_epoch_end(0, {})
    assert last.read_bytes() == before
    assert sorted(os.listdir(last.parent)) == ["best.keras", "last.keras"]


def test_every_steps_is_checked():
    with pytest.raises(ValueError, match="every_steps=0"):
        TrainingBackup("b", every_steps=0)
