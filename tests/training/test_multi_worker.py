"""The custom distributed loop: equal to Keras fit on one device, resumable, and real with 2 workers."""

import importlib.util
import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit.training.multi_worker import (
    DistributedTrainer,
    free_ports,
    launch_local_workers,
    load_weights_npz,
    save_weights_npz,
    tf_config,
)
from keras_vit.training.resume import list_backups

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "multi_worker.py")


def load_example():
    spec = importlib.util.spec_from_file_location("multi_worker_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fit_reference(count, epochs, batch, learning_rate=0.01):
    """Plain Keras `fit` on one device: what every distributed run must reproduce."""
    x, y = example.digits(count)
    model, optimizer = example.build(0, learning_rate)
    model.compile(optimizer, LOSS)
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0)
    return model.get_weights()


def assert_same_weights(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_custom_loop_equals_keras_fit_and_resumes_exactly(tmp_path):
    x, y = example.digits(128)
    examples = tf.data.Dataset.from_tensor_slices((x, y))
    expected = fit_reference(128, 2, 32)

    model, optimizer = example.build(0, 0.01)
    trainer = DistributedTrainer(model, optimizer, LOSS, global_batch_size=32, checkpoint_dir=str(tmp_path))
    history = trainer.fit(examples, epochs=1, verbose=False)
    first = history["loss"][0]
    assert len(history["loss"]) == 1 and list_backups(str(tmp_path)) == [str(tmp_path / "step-000001-000000000")]
    # a new process would rebuild everything from scratch: do the same, then resume at epoch 1
    model, optimizer = example.build(5, 0.01)
    resumed = DistributedTrainer(model, optimizer, LOSS, global_batch_size=32, checkpoint_dir=str(tmp_path))
    history = resumed.fit(examples, epochs=2, verbose=False)
    assert len(history["loss"]) == 2 and history["loss"][0] == first  # epoch 1 restored from the backup
    assert_same_weights(model.get_weights(), expected)
    assert set(resumed.evaluate(examples)) == {"loss", "accuracy"}


def test_trainer_argument_errors():
    model, optimizer = example.build()
    with pytest.raises(ValueError, match="global batch size must be a positive int"):
        DistributedTrainer(model, optimizer, LOSS, global_batch_size=-4)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    with pytest.raises(ValueError, match="strategy.scope"):
        DistributedTrainer(model, optimizer, LOSS, global_batch_size=8, strategy=mirrored)
    trainer = DistributedTrainer(model, optimizer, LOSS, global_batch_size=64)
    x, y = example.digits(16)
    with pytest.raises(ValueError, match="no full global batch of 64"):
        trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)), epochs=1, verbose=False)


def test_local_cluster_helpers(tmp_path):
    ports = free_ports(3)
    assert len(set(ports)) == 3
    config = json.loads(tf_config(ports, 1))
    assert config["task"] == {"type": "worker", "index": 1}
    assert config["cluster"]["worker"] == [f"127.0.0.1:{p}" for p in ports]
    model, _ = example.build()
    save_weights_npz(model, str(tmp_path / "w.npz"))
    assert_same_weights(load_weights_npz(str(tmp_path / "w.npz")), model.get_weights())
    assert os.listdir(tmp_path) == ["w.npz"]  # no temporary left behind


def run_workers(tmp_path, epochs, checkpoint_dir, out):
    command = [
        sys.executable,
        EXAMPLE,
        "--launch",
        "0",
        "--epochs",
        str(epochs),
        "--global_batch",
        "32",
        "--examples",
        "256",
        "--lr",
        "0.01",
        "--checkpoint_dir",
        str(checkpoint_dir),
        "--out",
        str(out),
    ]
    env = {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    codes = launch_local_workers(command, 2, timeout=240, env=env, log_dir=str(tmp_path / "logs"))
    logs = "".join((tmp_path / "logs" / f"worker_{i}.log").read_text()[-2000:] for i in range(2))
    assert codes == [0, 0], logs
    return logs


@pytest.mark.slow
def test_two_workers_on_localhost_match_one_device_and_resume(tmp_path):
    expected = fit_reference(256, 2, 32)
    # a 2-worker job stops after epoch 1; started again for 2 epochs it resumes from the chief's checkpoint
    logs = run_workers(tmp_path, 1, tmp_path / "ckpt", tmp_path / "epoch1.npz")
    assert "replicas=2" in logs and "epoch 1/1" in logs  # really two workers in one MultiWorkerMirroredStrategy
    logs = run_workers(tmp_path, 2, tmp_path / "ckpt", tmp_path / "final.npz")
    assert "epoch 1/2" not in logs and "epoch 2/2" in logs and "replicas=2" in logs
    # both epochs ran on 2 workers; the weights equal one device's `fit` on the same global batches
    assert_same_weights(load_weights_npz(str(tmp_path / "final.npz")), expected)
    assert not [p for p in os.listdir(tmp_path / "ckpt") if p.startswith(".worker_")]


# ---- exact mid-epoch resume and models with their own loss (one process) ------------------------------------
def random_model(seed):
    """The example's ViT with dropout and stochastic depth: its seed generators are part of the state to resume."""
    import keras_vit

    keras.utils.set_random_seed(seed)
    arch = dict(example.ARCH, dropout_rate=0.1, drop_path_rate=0.2)
    return keras_vit.ViT(**arch), keras.optimizers.AdamW(1e-3)


def shuffled_digits(count=64):
    x, y = example.digits(count)

    def examples(epoch):  # the order of epoch e: a function of e alone (not of the process's global seed)
        order = np.random.default_rng(epoch).permutation(count)
        return tf.data.Dataset.from_tensor_slices((x[order], y[order]))

    return examples


class Killed(RuntimeError):
    pass


def interrupt_at(trainer, step):
    """Makes the trainer's `step`-th training step (counting from 1) raise, as a crash would."""
    calls = []
    original = trainer._train_function

    def train_function(batch):
        calls.append(1)
        if len(calls) == step:
            raise Killed(f"killed at step {step}")
        return original(batch)

    trainer._train_function = train_function


def fit_random(checkpoint_dir, seed=0, kill_at=None, epochs=2, **kwargs):
    model, optimizer = random_model(seed)
    trainer = DistributedTrainer(
        model, optimizer, LOSS, global_batch_size=16, checkpoint_dir=checkpoint_dir, backup_every_steps=1, **kwargs
    )
    if kill_at:
        interrupt_at(trainer, kill_at)
    x, y = example.digits(32)
    validation = tf.data.Dataset.from_tensor_slices((x, y))
    history = trainer.fit(shuffled_digits(), epochs=epochs, validation_data=validation, verbose=False)
    return model, history


def assert_bitwise(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_a_run_killed_mid_epoch_resumes_bitwise_past_a_corrupt_backup(tmp_path, capsys):
    expected, expected_history = fit_random(str(tmp_path / "straight"))
    folder = str(tmp_path / "killed")
    with pytest.raises(Killed):  # 4 steps per epoch, a backup after each: killed at step 4 of epoch 2
        fit_random(folder, kill_at=8)
    newest, previous = list_backups(folder)
    assert (newest, previous) == (f"{folder}/step-000001-000000003", f"{folder}/step-000001-000000002")
    with open(os.path.join(newest, "state.npz"), "r+b") as file:  # as a torn write would leave it
        file.truncate(100)
    capsys.readouterr()
    model, history = fit_random(folder, seed=7)  # a new process starts from other random weights
    err = capsys.readouterr().err
    assert f"Backup {newest} is unreadable" in err and f"falling back to the previous backup {previous}" in err
    assert f"Resuming from backup {previous} (epoch 2, step 2)" in err
    assert_bitwise(model.get_weights(), expected.get_weights())
    assert history == expected_history and len(history["loss"]) == 2 and "val_accuracy" in history
    # the dropout and drop-path seed generators came back too (a fresh model's would start elsewhere)
    seeds = {v.path: v.numpy() for v in model.variables if "seed_generator_state" in v.path}
    assert seeds and all(np.array_equal(seeds[v.path], v.numpy()) for v in expected.variables if v.path in seeds)
    assert len(list_backups(folder)) == 2 and list_backups(folder)[0] == f"{folder}/step-000002-000000000"


def test_backup_arguments_are_checked(tmp_path):
    model, optimizer = example.build()
    with pytest.raises(ValueError, match="max_to_keep"):
        DistributedTrainer(model, optimizer, LOSS, global_batch_size=8, max_to_keep=1)
    with pytest.raises(ValueError, match="backup_every_steps"):
        DistributedTrainer(model, optimizer, LOSS, global_batch_size=8, backup_every_steps=0)
    with pytest.raises(ValueError, match=r"loss=None.*Received: top_k=\(5,\)"):
        DistributedTrainer(model, optimizer, None, global_batch_size=8, top_k=(5,))
    trainer = DistributedTrainer(model, optimizer, None, global_batch_size=8)
    x, y = example.digits(16)
    with pytest.raises(ValueError, match="must return a dict with its own 'loss'"):
        trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)), epochs=1, verbose=False)
    # a backup of another model is refused by name
    fit_random(str(tmp_path), epochs=1)
    with pytest.raises(ValueError, match="belongs to another model"):
        DistributedTrainer(model, optimizer, LOSS, global_batch_size=8, checkpoint_dir=str(tmp_path)).fit(
            tf.data.Dataset.from_tensor_slices((x, y)), epochs=1, verbose=False
        )


def tiny_mae(seed=0):
    import keras_vit

    keras.utils.set_random_seed(seed)
    mae = keras_vit.MAE(
        "vit_digits_patch2_8",
        depth=1,
        hidden_dim=16,
        num_heads=2,
        mlp_dim=32,
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=2,
        seed=seed,
    )
    return mae, keras.optimizers.AdamW(1e-3)


def test_a_model_with_its_own_loss_trains_like_keras_fit(tmp_path):
    x, _ = example.digits(64)
    reference, optimizer = tiny_mae()
    reference.compile(optimizer)
    keras_history = reference.fit(x, batch_size=16, epochs=2, shuffle=False, verbose=0).history

    model, optimizer = tiny_mae()
    trainer = DistributedTrainer(model, optimizer, None, global_batch_size=16, checkpoint_dir=str(tmp_path))
    history = trainer.fit(tf.data.Dataset.from_tensor_slices((x,)), epochs=2, verbose=False)
    assert set(history) == {"loss"} and history["loss"][1] < history["loss"][0]
    # the same masking noise and the same loss: the weights and per-epoch losses of `fit` on one device
    assert_same_weights(model.get_weights(), reference.get_weights())
    np.testing.assert_allclose(history["loss"], keras_history["loss"], rtol=1e-5)
    # evaluation counts every example once: 50 images in 16-row batches (the last padded) average as 50
    evaluation = trainer.evaluate(tf.data.Dataset.from_tensor_slices((x[:50],)))
    assert set(evaluation) == {"loss"} and np.isfinite(evaluation["loss"])
