"""The runner on a tiny model: parts to fit yourself, a whole run's folder, and checks before training."""

import json
import os
import pathlib

import keras
import numpy as np
import pytest

from keras_vit.recipes import evaluate, prepare, run
from keras_vit.recipes import runner as runner_module

TINY = dict(
    model_overrides=dict(depth=1, hidden_dim=16, num_heads=2, mlp_dim=32),
    epochs=1,
    steps_per_epoch=3,
    batch_size=32,
    tensorboard=False,
    verbose=0,
    warmup_epochs=0,
)


def test_prepare_gives_parts_to_fit_yourself(tmp_path):
    parts = prepare("digits_vit", run_dir=str(tmp_path / "run"), **TINY)
    assert parts.model.config.depth == 1 and parts.model.optimizer is not None
    images, labels = next(iter(parts.train_data))
    assert images.shape == (32, 8, 8, 1) and labels.shape == (32, 10)
    before = [v.numpy().copy() for v in parts.model.trainable_variables]
    parts.train_model.fit(parts.train_data, epochs=1, steps_per_epoch=2, verbose=0)
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, parts.model.trainable_variables))
    assert parts.train_model.evaluate(parts.test_data, verbose=0, return_dict=True)["accuracy"] >= 0.0


def test_run_writes_the_run_folder_and_evaluate_reads_it(tmp_path):
    run_dir = str(tmp_path / "run")
    run("digits_vit", run_dir=run_dir, **TINY)
    assert sorted(os.listdir(run_dir)) == [
        "checkpoints",
        "history.csv",
        "learning_curve.png",
        "metrics.json",
        "model.keras",
        "recipe.json",
    ]
    metrics = json.loads(pathlib.Path(run_dir, "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["recipe"] == "digits_vit" and metrics["epochs"] == 1
    assert (metrics["precision"], metrics["xla"]) == ("float32", True)  # "auto" on a CPU for a 16-wide model
    assert json.loads(pathlib.Path(run_dir, "recipe.json").read_text())["model_overrides"]["depth"] == 1
    again = evaluate(os.path.join(run_dir, "model.keras"), "digits_vit")
    assert again["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_linear_probe_trains_only_the_head(tmp_path):
    source = run("digits_vit", run_dir=str(tmp_path / "pre"), **TINY)
    path = os.path.join(source.run_dir, "model.keras")
    parts = prepare(
        "linear_probe",
        init_from=path,
        model="vit_digits_patch2_8",
        dataset="digits",
        image_size=None,
        crop="resize",
        hflip=False,
        classes=(0, 1, 2),
        run_dir=str(tmp_path / "probe"),
        **TINY,
    )
    assert [v.path for v in parts.model.trainable_variables] == ["head/kernel", "head/bias"]
    np.testing.assert_array_equal(
        parts.model.get_layer("block_0").get_weights()[0], source.model.get_layer("block_0").get_weights()[0]
    )
    assert parts.model.output_shape == (None, 3)


class _TwoReplicas:
    num_replicas_in_sync = 2


def test_checks_fail_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"Unknown recipe 'nope'"):
        prepare("nope")
    with pytest.raises(ValueError, match=r"needs a data path \(--data_dir\)"):
        prepare("digits_vit", dataset="folder")
    with pytest.raises(ValueError, match=r"'/no/such/dir' does not exist"):
        prepare("digits_vit", dataset="cifar10", data_dir="/no/such/dir")
    with pytest.raises(ValueError, match=r"fine-tunes a trained model: pass init_from"):
        prepare("vit_finetune")
    with pytest.raises(ValueError, match=r"init_from '.*missing\.keras' does not exist"):
        prepare("vit_finetune", init_from=str(tmp_path / "missing.keras"))
    monkeypatch.setattr(runner_module, "get_strategy", lambda name: _TwoReplicas())
    with pytest.raises(ValueError, match=r"global batch size 63 does not divide across the 2 replicas"):
        prepare("digits_vit", batch_size=63)
    assert not os.path.exists("runs")  # nothing was written
