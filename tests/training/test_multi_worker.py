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
    assert len(history["loss"]) == 1 and tf.train.latest_checkpoint(str(tmp_path))
    # a new process would rebuild everything from scratch: do the same, then resume at epoch 1
    model, optimizer = example.build(5, 0.01)
    resumed = DistributedTrainer(model, optimizer, LOSS, global_batch_size=32, checkpoint_dir=str(tmp_path))
    history = resumed.fit(examples, epochs=2, verbose=False)
    assert len(history["loss"]) == 1  # only epoch 2 ran
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
