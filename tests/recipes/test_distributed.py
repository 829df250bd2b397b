"""Recipes on the custom multi-worker loop: the same training as `fit`, and a real 2-worker `keras-vit train`."""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_vit.recipes import distributed, fit_prepared, prepare
from keras_vit.training.multi_worker import free_ports, launch_local_workers, tf_config

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
    codes = launch_local_workers(command, 2, timeout=400, env=env, log_dir=log_dir)
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


# ---- MAE pretraining on two workers: one process's weights, and exact resume after SIGKILL ------------------------
MAE_ARCH = dict(depth=1, hidden_dim=16, num_heads=2, mlp_dim=32, decoder_dim=16, decoder_depth=1, decoder_heads=2)
MAE_SETTINGS = dict(
    model="mae_vit_digits_patch2_8",
    model_overrides=dict(MAE_ARCH, mask_ratio=0.75, norm_pix_loss=True),
    dataset="digits",
    eval_split="test",
    epochs=2,
    batch_size=32,
    steps_per_epoch=4,
    warmup_epochs=0,
    lr=0.01,  # x 32/256: AdamW at 1.25e-3, so 8 steps move the weights far more than the tolerance below
    backup_every_steps=1,
    jit_compile=False,
    tensorboard=False,
)


def pretrain_command(run_dir):
    sets = [f"--set={key}={value!r}" for key, value in MAE_SETTINGS.items()]
    command = [sys.executable, "-m", "keras_vit.cli", "pretrain", "--recipe", "mae_pretrain"]
    return [*command, "--strategy", "multi_worker", "--run_dir", run_dir, *sets]


def worker_env():
    return {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start_workers(command, log_dir):
    """Two workers of `command` on 127.0.0.1, not waited for (so that the test can kill them)."""
    ports = free_ports(2)
    os.makedirs(log_dir, exist_ok=True)
    processes = []
    for index in range(2):
        env = {**os.environ, **worker_env(), "TF_CONFIG": tf_config(ports, index)}
        with open(os.path.join(log_dir, f"worker_{index}.log"), "a") as log:
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return processes


def kill_mid_epoch(command, backups, log_dir, rng):
    """Starts the job and SIGKILLs both workers a random moment after a random step's backup: mid-epoch."""
    target = int(rng.integers(2, 8))  # a global step of either epoch (4 steps each), not an epoch end
    processes = start_workers(command, log_dir)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and all(p.poll() is None for p in processes):
            names = os.listdir(backups) if os.path.isdir(backups) else []
            done = [int(n.split("-")[1]) * 4 + int(n.split("-")[2]) for n in names if n.startswith("step-")]
            if any(step >= target for step in done):
                break
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, 1.0)))  # anywhere inside the next step or its backup write
    finally:
        for process in processes:
            process.kill()
            process.wait()
    return target


def mae_weights(run_dir):
    return keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False).get_weights()


def assert_mae_weights_close(model, expected, steps, lr):
    """Within 1e-5, but for the key part of each qkv bias: its exact gradient is 0 (softmax ignores a shift
    common to all keys), so its rounding noise, which AdamW scales up to steps of lr, is all that moves it."""
    for variable, want in zip(model.weights, expected, strict=True):
        got = variable.numpy()
        if variable.path.endswith("qkv/bias"):
            third = got.shape[0] // 3
            np.testing.assert_array_less(np.abs(got - want)[third : 2 * third], 2 * steps * lr)
            got, want = np.delete(got, np.s_[third : 2 * third]), np.delete(want, np.s_[third : 2 * third])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=variable.path)


@pytest.mark.slow
def test_mae_pretraining_on_two_workers_matches_one_process_and_resumes_bitwise_after_sigkill(tmp_path):
    from keras_vit import recipes

    straight = str(tmp_path / "straight")
    codes = launch_local_workers(
        pretrain_command(straight), 2, timeout=400, env=worker_env(), log_dir=f"{straight}_logs"
    )
    assert codes == [0, 0], pathlib.Path(f"{straight}_logs", "worker_0.log").read_text()[-3000:]
    history = pathlib.Path(straight, "history.csv").read_text()
    losses = [float(row["loss"]) for row in read_history(os.path.join(straight, "history.csv"))]
    assert len(losses) == 2 and losses[1] < losses[0]
    metrics = json.loads(pathlib.Path(straight, "metrics.json").read_text())
    assert metrics["num_replicas"] == 2 and metrics["test_loss"] > 0 and "test_accuracy" not in metrics

    # one process, Keras `fit`, the same global batches and masking noise
    single = recipes.run("mae_pretrain", run_dir=str(tmp_path / "single"), verbose=0, **MAE_SETTINGS)
    two_workers = mae_weights(straight)
    initial = recipes.prepare("mae_pretrain", run_dir=str(tmp_path / "init"), **MAE_SETTINGS).model.get_weights()
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(single.model.get_weights(), initial))
    assert moved > 5e-3  # the training moved the weights by far more than the tolerance
    assert_mae_weights_close(single.model, two_workers, steps=8, lr=0.01 * 32 / 256)

    # killed at a random mid-epoch moment (seeded), then the same command until it finishes
    resumed = str(tmp_path / "resumed")
    target = kill_mid_epoch(
        pretrain_command(resumed),
        os.path.join(resumed, distributed.BACKUP),
        f"{resumed}_logs",
        np.random.default_rng(4),
    )
    assert not os.path.isfile(os.path.join(resumed, "metrics.json")), f"finished before the kill (step {target})"
    for _ in range(3):
        if launch_local_workers(
            pretrain_command(resumed), 2, timeout=400, env=worker_env(), log_dir=f"{resumed}_logs"
        ) == [0, 0]:
            break
    logs = pathlib.Path(f"{resumed}_logs", "worker_0.log").read_text()
    assert "Resuming from backup" in logs, logs[-3000:]
    for got, expected in zip(mae_weights(resumed), two_workers, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert pathlib.Path(resumed, "history.csv").read_text() == history


@pytest.mark.slow
def test_linear_probe_and_mae_finetune_from_an_mae_encoder_on_two_workers(tmp_path):
    import keras_vit

    mae = keras_vit.MAE("mae_vit_digits_patch2_8", **MAE_ARCH)
    init = str(tmp_path / "mae.keras")
    mae.save(init)
    arch = dict(depth=1, hidden_dim=16, num_heads=2, mlp_dim=32)
    for recipe, overrides in (("linear_probe", arch), ("mae_finetune", dict(arch, pooling="gap"))):
        run_dir = str(tmp_path / recipe)
        settings = dict(model_overrides=overrides, steps_per_epoch=2, eval_split="test", tensorboard=False)
        command = [sys.executable, "-m", "keras_vit.cli", "finetune", "--recipe", recipe, "--init", init]
        command += ["--model", "vit_digits_patch2_8", "--dataset", "digits", "--batch_size", "32", "--epochs", "1"]
        command += ["--strategy", "multi_worker", "--run_dir", run_dir, "--xla", "off"]
        command += [f"--set={key}={value!r}" for key, value in settings.items()]
        codes = launch_local_workers(command, 2, timeout=400, env=worker_env(), log_dir=f"{run_dir}_logs")
        assert codes == [0, 0], pathlib.Path(f"{run_dir}_logs", "worker_0.log").read_text()[-3000:]
        metrics = json.loads(pathlib.Path(run_dir, "metrics.json").read_text())
        assert metrics["num_replicas"] == 2 and 0.0 <= metrics["test_accuracy"] <= 1.0
        trained = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
        assert not np.array_equal(trained.get_layer("head").weights[0].numpy(), 0.0)  # the head trained
        if recipe == "linear_probe":  # the frozen encoder is still the MAE's
            for name in ("patch_embed", "block_0"):
                for a, b in zip(trained.get_layer(name).weights, mae.get_layer(name).weights, strict=True):
                    np.testing.assert_array_equal(a.numpy(), b.numpy())
