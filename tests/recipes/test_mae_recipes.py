"""The MAE recipes: pretraining on unlabeled images, fine-tuning and linear probing from its encoder, CLI, mirrored."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_vit
from keras_vit import recipes
from keras_vit.recipes.runner import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = dict(
    model="mae_vit_digits_patch2_8",
    dataset="digits",
    eval_split="test",
    batch_size=64,
    steps_per_epoch=4,
    jit_compile=False,
    verbose=0,
)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("mae") / "run")
    return recipes.run("mae_pretrain", epochs=2, warmup_epochs=1, run_dir=run_dir, **SMALL)


def test_recipes_carry_the_paper_settings():
    pre, fine = recipes.get_recipe("mae_pretrain"), recipes.get_recipe("mae_finetune")
    assert (pre.lr, pre.base_batch_size, pre.weight_decay, pre.warmup_epochs) == (1.5e-4, 256, 0.05, 40)
    assert pre.beta_2 == 0.95 and fine.beta_2 == 0.999

    assert pre.crop_scale == (0.2, 1.0) and pre.hflip and not (pre.mixup_alpha or pre.randaugment_ops)
    assert pre.model_overrides["mask_ratio"] == 0.75 and "2111.06377" in pre.source
    assert (fine.layer_decay, fine.drop_path_rate, fine.label_smoothing) == (0.65, 0.1, 0.1)
    assert (fine.mixup_alpha, fine.cutmix_alpha, fine.model_overrides["pooling"]) == (0.8, 1.0, "gap")


def test_mae_pretrain_builds_adamw_with_the_papers_betas():
    parts = prepare("mae_pretrain", **SMALL)
    assert (parts.train_model.optimizer.beta_1, parts.train_model.optimizer.beta_2) == (0.9, 0.95)


def test_pretraining_runs_without_labels_and_saves_an_mae(pretrained):
    history = pretrained.history["loss"]
    assert len(history) == 2 and history[1] < history[0]
    assert np.isfinite(pretrained.metrics["test_loss"]) and "test_accuracy" not in pretrained.metrics
    assert isinstance(pretrained.model, keras_vit.MAE)
    assert os.path.isfile(os.path.join(pretrained.run_dir, "model.keras"))


@pytest.mark.slow
def test_pretraining_resumes_in_its_run_folder(pretrained, tmp_path):
    run_dir = str(tmp_path / "resumed")
    recipes.run("mae_pretrain", epochs=1, warmup_epochs=0, run_dir=run_dir, **SMALL)
    resumed = recipes.run("mae_pretrain", epochs=2, warmup_epochs=0, run_dir=run_dir, **SMALL)
    assert len(resumed.history["loss"]) == 2  # the first epoch came from the backup, one more was trained


def test_finetune_and_linear_probe_start_from_the_mae_encoder(pretrained):
    init = os.path.join(pretrained.run_dir, "model.keras")
    mae = pretrained.model
    common = dict(dataset="digits", eval_split="test", batch_size=64, steps_per_epoch=2, epochs=1, init_from=init)
    fine = prepare("mae_finetune", model="vit_digits_patch2_8", randaugment_ops=0, run_dir=None, **common)
    probe = prepare("linear_probe", model="vit_digits_patch2_8", **common)
    for parts in (fine, probe):
        for name in ("patch_embed", "pos_embed", "block_0", "block_3"):
            for a, b in zip(parts.model.get_layer(name).weights, mae.get_layer(name).weights):
                np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert fine.model.config.pooling == "gap" and fine.model.config.use_fc_norm
    assert [layer.name for layer in probe.model.layers if layer.trainable_weights] == ["head"]


def test_pretraining_checks_its_settings():
    with pytest.raises(ValueError, match=r"Received: model='vit_digits_patch2_8'"):
        recipes.get_recipe("mae_pretrain").replace(model="vit_digits_patch2_8")
    assert recipes.get_recipe("mae_pretrain").replace(strategy="multi_worker").strategy == "multi_worker"


@pytest.mark.slow
def test_cli_pretrain_command(tmp_path):
    run_dir = tmp_path / "cli"
    command = [sys.executable, "-m", "keras_vit.cli", "pretrain", "--model", "mae_vit_digits_patch2_8"]
    command += ["--dataset", "digits", "--epochs", "1", "--batch_size", "64", "--run_dir", str(run_dir)]
    command += ["--xla", "off", "--set", "steps_per_epoch=2", "--set", "warmup_epochs=0", "--set", "eval_split='test'"]
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "recipe mae_pretrain" in done.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["recipe"] == "mae_pretrain"


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            import tensorflow as tf
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            from keras_vit import recipes
            result = recipes.run("mae_pretrain", strategy="mirrored", epochs=2, warmup_epochs=0,
                                 run_dir={str(tmp_path / "run")!r}, **{SMALL!r})
            print(json.dumps(dict(replicas=result.metrics["num_replicas"], loss=result.history["loss"])))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    # The logged loss is the global-batch mean (not the replicas' sum): near the one-device run's first epoch.
    assert 0.5 < out["loss"][0] < 2.0 and out["loss"][1] < out["loss"][0]


def _env():
    return dict(
        os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""
    )
