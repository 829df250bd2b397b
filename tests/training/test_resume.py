"""Crash-resume: SIGKILL mid-run, rerun the same command, and end with the uninterrupted run's weights."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_vit.training.resume import AtomicBackupAndRestore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "training", "resume_script.py")


def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def test_a_crash_inside_a_backup_keeps_the_previous_one(tmp_path, rng, monkeypatch):
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")
    backup = tmp_path / "backup"
    model = tiny_model()

    class CrashOnSecondSave(AtomicBackupAndRestore):
        def _save_model(self):
            if self._current_epoch == 2:  # the weights get written, then the process "dies" before the commit
                real_replace = os.replace

                def die_on_metadata(src, dst):
                    if str(dst).endswith("training_metadata.json"):
                        raise KeyboardInterrupt("killed")
                    real_replace(src, dst)

                monkeypatch.setattr(os, "replace", die_on_metadata)
            super()._save_model()

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[CrashOnSecondSave(str(backup))])
    monkeypatch.undo()
    callback = AtomicBackupAndRestore(str(backup))
    metadata = callback.read_metadata()
    assert metadata["epoch"] == 1
    assert (backup / metadata["weights"]).exists()

    # resuming trains epochs 2 and 3 from epoch 1's state: equal to an uninterrupted 3-epoch run
    resumed = tiny_model()
    history = resumed.fit(x, y, epochs=3, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 2
    reference = tiny_model()
    reference.fit(x, y, epochs=3, verbose=0)
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert not backup.exists()  # removed when fit finished


def test_foreign_backup_dir_is_refused(tmp_path):
    (tmp_path / "training_metadata.json").write_text(json.dumps({"epoch": 1, "batch": 0}))
    with pytest.raises(ValueError, match="not written by AtomicBackupAndRestore"):
        AtomicBackupAndRestore(str(tmp_path)).read_metadata()


def run_script(run_dir, *extra):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, SCRIPT, str(run_dir), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished_epochs(run_dir):
    path = os.path.join(run_dir, "progress")
    return [int(line) for line in open(path).read().split()] if os.path.exists(path) else []


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    uninterrupted = run_script(tmp_path / "clean")
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    process = run_script(killed_dir, "--batch-delay", "0.05")
    deadline = time.monotonic() + 240
    while len(finished_epochs(killed_dir)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # well inside epoch 3 (8 batches of >= 50 ms each)
    assert process.poll() is None, process.communicate()[0][-3000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = finished_epochs(killed_dir)
    assert 2 <= len(killed_at) < 6 and not (killed_dir / "final.npz").exists()
    # what the rerun reads is complete: committed metadata naming a loadable weights file
    backup = AtomicBackupAndRestore(str(killed_dir / "backup"))
    metadata = backup.read_metadata()
    assert metadata["epoch"] == killed_at[-1]

    rerun = run_script(killed_dir)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output[-3000:]
    resumed_epochs = finished_epochs(killed_dir)[len(killed_at) :]
    assert resumed_epochs == list(range(killed_at[-1] + 1, 7))  # resumed after the last saved epoch
    output = uninterrupted.communicate(timeout=300)[0]
    assert uninterrupted.returncode == 0, output[-3000:]
    with np.load(tmp_path / "clean" / "final.npz") as clean, np.load(killed_dir / "final.npz") as resumed:
        assert clean.files == resumed.files
        for key in clean.files:
            np.testing.assert_allclose(resumed[key], clean[key], rtol=0, atol=1e-6)
    assert not (killed_dir / "backup").exists()
