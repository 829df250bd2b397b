"""SIGKILL real `keras-vit train` processes at random moments, rerun the same command, compare bitwise.

Each case runs the command once uninterrupted, then starts it again in a new
run folder and kills it several times (seeded random delays measured from the
attempt's first new backup, so every attempt makes progress and kills land
mid-epoch, inside backups and at epoch ends),
rerunning the same command until it finishes. The model, the checkpoints, the
metrics (all but the wall-clock time) and history.csv must equal the
uninterrupted run's bit for bit.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_vit  # noqa: F401  registers the model classes that load_model meets
from keras_vit.training.resume import list_backups
from tests.training.cifar_files import write_cifar10

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILLS = 3
KILL_WINDOW = (0.0, 3.0)  # seconds after the attempt's first new backup (so every attempt makes progress)


def train_command(run_dir, *flags):
    return [sys.executable, "-m", "keras_vit.cli", "train", "--run_dir", str(run_dir), *flags]


def start(command):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, timeout=600):
    output = process.communicate(timeout=timeout)[0]
    assert process.returncode == 0, output[-4000:]
    return output


def newest_backup(run_dir):
    backups = list_backups(os.path.join(run_dir, "backup"))
    return backups[0] if backups else None


def kill_at_random_moments(command, run_dir, seed):
    """Starts `command` and SIGKILLs it `KILLS` times, each a random time after the attempt's first backup."""
    rng = np.random.default_rng(seed)
    kills = []
    for _ in range(KILLS):
        before = newest_backup(run_dir)
        process = start(command)
        while newest_backup(run_dir) == before and process.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(*KILL_WINDOW))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills.append(newest_backup(run_dir))
        process.communicate()
    return kills


def weights(path):
    return keras.saving.load_model(path, compile=False).get_weights()


def assert_same_run(clean, resumed, checkpoints):
    for a, b in zip(weights(clean / "model.keras"), weights(resumed / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)
    for name in checkpoints:
        for a, b in zip(weights(clean / "checkpoints" / name), weights(resumed / "checkpoints" / name), strict=True):
            np.testing.assert_array_equal(a, b)
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (clean, resumed)]
    for m in metrics:
        m.pop("train_seconds")
    assert metrics[0] == metrics[1]
    assert (clean / "history.csv").read_bytes() == (resumed / "history.csv").read_bytes()
    assert not (resumed / "backup").exists()


def check_kill_and_resume(tmp_path, flags, checkpoints, seed):
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    uninterrupted = start(train_command(clean, *flags))  # beside the killed ones: two cores, half the wall time
    command = train_command(resumed, *flags)
    kills = kill_at_random_moments(command, resumed, seed)
    assert len(kills) >= 2, f"only {len(kills)} of {KILLS} processes were still running when killed"
    output = finish(start(command))
    assert "Resuming from backup" in output
    finish(uninterrupted)
    assert_same_run(clean, resumed, checkpoints)


@pytest.mark.slow
def test_default_digits_recipe_killed_and_rerun_matches(tmp_path):
    flags = ["--recipe", "digits_vit", "--epochs", "3", "--set", "backup_every_steps=5", "--set", "tensorboard=False"]
    check_kill_and_resume(tmp_path, flags, ["last.keras"], seed=0)


@pytest.mark.slow
def test_cifar_recipe_with_every_augmentation_ema_and_early_stopping_killed_and_rerun_matches(tmp_path):
    data_dir = write_cifar10(str(tmp_path / "data"), per_file=32)
    flags = [
        "--recipe",
        "cifar10_vit_scratch",
        "--data_dir",
        data_dir,
        "--epochs",
        "3",
        "--batch_size",
        "16",
        "--set",
        "model_overrides={'hidden_dim': 32, 'depth': 2, 'num_heads': 2, 'mlp_dim': 64}",
        "--set",
        "val_fraction=0.2",
        "--set",
        "early_stopping_patience=2",
        "--set",
        "ema=True",
        "--set",
        "ema_momentum=0.9",
        "--set",
        "warmup_epochs=1",
        "--set",
        "backup_every_steps=3",
        "--set",
        "tensorboard=False",
    ]
    check_kill_and_resume(tmp_path, flags, ["last.keras", "best.keras"], seed=1)
