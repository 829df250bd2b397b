"""Recipes on the custom multi-worker loop: the same training as `fit`, and a real 2-worker `keras-vit train`."""

import csv
import json
import os
import pathlib
import shutil
import sys

import keras
import numpy as np
import pytest

from keras_vit.recipes import distributed, fit_prepared, prepare
from keras_vit.training.multi_worker import launch_local_workers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# digits_vit with its mixup (mixed one-hot labels), clipping 1.0, plus label smoothing; no stochastic depth so
# that two runs can be compared weight for weight
TINY = dict(
    model_overrides=dict(depth=1, hidden_dim=16, num_heads=2, mlp_dim=32),
    batch_size=32,
    tensorboard=False,
    verbose=0,
    drop_path_rate=0.0,
    label_smoothing=0.1,
    mixed_precision=False,
)


def assert_same_weights(got, expected, atol=1e-5):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def read_history(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_custom_loop_trains_a_recipe_like_fit(tmp_path):
    settings = dict(TINY, epochs=1, steps_per_epoch=5)
    reference = prepare("digits_vit", run_dir=str(tmp_path / "fit"), **settings)
    fit_prepared(reference)
    assert int(reference.model.optimizer.iterations.numpy()) == 5  # not one whole execution of 11 steps
    parts = prepare("digits_vit", run_dir=str(tmp_path / "loop"), **settings)
    labels = next(iter(parts.train_data))[1].numpy()
    assert labels.shape == (32, 10) and not np.all(np.isin(labels, (0.0, 1.0)))  # mixed one-hot labels
    trainer = distributed.train(parts, parts.train_data_for_epoch)
    assert_same_weights(parts.model.get_weights(), reference.model.get_weights())
    # evaluation counts the last partial batch (360 test digits = 11 batches of 32 + 8) like `evaluate`
    expected = reference.model.evaluate(reference.test_data, verbose=0, return_dict=True)
    got = trainer.evaluate(parts.test_data, batched=True)
    assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    rows = read_history(str(tmp_path / "loop" / "history.csv"))
    assert [int(r["epoch"]) for r in rows] == [0] and set(rows[0]) == {
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
    }
    assert os.listdir(tmp_path / "loop" / distributed.BACKUP)  # the epoch checkpoint


def test_history_rows_are_replaced_from_a_resumed_epoch_on(tmp_path):
    path = str(tmp_path / "history.csv")
    for epoch, loss in ((0, 1.0), (1, 0.5), (2, 0.25), (1, 0.4)):  # a job resumed after epoch 0 rewrites 1 on
        distributed.write_history_row(path, epoch, {"loss": loss, "accuracy": 0.5})
    rows = read_history(path)
    assert [(r["epoch"], float(r["loss"])) for r in rows] == [("0", 1.0), ("1", 0.4)]
    assert os.listdir(tmp_path) == ["history.csv"]


def test_top_k_follows_the_recipe_metrics():
    recipe = prepare.__globals__["resolve"]("digits_vit")
    assert distributed.top_k_of(recipe.metrics(10)) == ()
    assert distributed.top_k_of(recipe.metrics(100)) == (5,)


def test_multi_worker_rejects_what_the_loop_does_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"'digits_deit_distill' trains through its own train step"):
        prepare("digits_deit_distill", strategy="multi_worker")
    with pytest.raises(ValueError, match=r"EMA weights are not supported .*Received: ema=True"):
        prepare("digits_vit", strategy="multi_worker", ema=True)
    with pytest.raises(ValueError, match=r"Early stopping is not supported"):
        prepare("digits_vit", strategy="multi_worker", val_fraction=0.1, early_stopping_patience=3)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"needs the TF_CONFIG environment variable"):
        prepare("digits_vit", strategy="multi_worker")
    assert not os.path.exists("runs")


# ---- two real worker processes on 127.0.0.1 ------------------------------------------------------
# a constant learning rate (min_lr = lr) makes "1 epoch, then resumed to 2" the same job as "2 epochs";
# a small clip_norm keeps global-norm clipping active, which must act on the summed gradient of both workers
MW = dict(TINY, steps_per_epoch=8, warmup_epochs=0, lr=2e-3, min_lr=2e-3, verbose=1, clip_norm=0.05)


def train_two_workers(run_dir, epochs, log_dir):
    sets = [f"--set={key}={value!r}" for key, value in MW.items()]
    command = [
        sys.executable,
        "-m",
        "keras_vit.cli",
        "train",
        "--strategy",
        "multi_worker",
        "--run_dir",
        run_dir,
        "--epochs",
        str(epochs),
        *sets,
    ]
    env = {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    codes = launch_local_workers(command, 2, timeout=150, env=env, log_dir=log_dir)
    logs = [pathlib.Path(log_dir, f"worker_{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "".join(log[-3000:] for log in logs)
    return logs


@pytest.mark.slow
def test_keras_vit_train_on_two_workers_resumes_and_matches_one_device(tmp_path):
    one, run_dir = str(tmp_path / "one"), str(tmp_path / "run")
    # epoch 1 on one device; its checkpoint and history start the 2-worker job's run folder
    parts = prepare("digits_vit", run_dir=one, epochs=1, **MW)
    distributed.train(parts, parts.train_data_for_epoch)
    shutil.copytree(one, run_dir)
    parts = prepare("digits_vit", run_dir=one, epochs=2, **MW)  # one device goes on to epoch 2: the reference
    distributed.train(parts, parts.train_data_for_epoch)

    chief, other = train_two_workers(run_dir, 2, str(tmp_path / "logs"))
    assert "epoch 1/2" not in chief and "epoch 2/2" in chief  # resumed after epoch 1
    assert "epoch 2/2" not in other  # the chief alone reports
    trained = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    assert_same_weights(trained.get_weights(), parts.model.get_weights())
    assert sorted(os.listdir(run_dir)) == [
        distributed.BACKUP,
        "history.csv",
        "learning_curve.png",
        "metrics.json",
        "model.keras",
        "recipe.json",
    ]
    assert not [p for p in os.listdir(os.path.join(run_dir, distributed.BACKUP)) if p.startswith(".worker_")]
    metrics = json.loads(pathlib.Path(run_dir, "metrics.json").read_text())
    assert metrics["num_replicas"] == 2 and metrics["epochs"] == 2 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert [int(r["epoch"]) for r in read_history(os.path.join(run_dir, "history.csv"))] == [0, 1]
