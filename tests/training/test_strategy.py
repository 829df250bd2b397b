"""Strategy selection, batch checks, and MirroredStrategy on 2 logical CPUs matching one device."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from keras_vit.training.strategy import (
    STRATEGIES,
    check_jit_compile,
    get_strategy,
    read_tf_config,
    validate_global_batch,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_names_map_to_strategies():
    assert get_strategy("default") is tf.distribute.get_strategy()
    assert get_strategy("auto").num_replicas_in_sync == 1  # tests hide GPUs: no mirroring
    one = get_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy) and "CPU" in one.extended.worker_devices[0].upper()
    mirrored = get_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(ValueError, match=r"Unknown strategy 'mirror'.*one of \('auto'"):
        get_strategy("mirror")
    assert set(STRATEGIES) == {"auto", "default", "one_device", "mirrored", "multi_worker", "tpu"}


def test_tpu_without_a_tpu_is_a_clear_error():
    with pytest.raises(ValueError, match="found no TPU.*pick another strategy"):
        get_strategy("tpu")


def test_multi_worker_needs_a_valid_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_tf_config()
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}})
    )
    with pytest.raises(ValueError, match="index must point into"):
        read_tf_config()
    config = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert read_tf_config() == config


def test_global_batch_must_divide_across_replicas():
    single = tf.distribute.get_strategy()
    assert validate_global_batch(33, single) == 33
    with pytest.raises(ValueError, match="positive int"):
        validate_global_batch(0, single)


def test_xla_is_refused_under_mirroring():
    assert check_jit_compile(True, tf.distribute.get_strategy()) is True


MIRRORED_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from sklearn.datasets import load_digits
    import keras_vit
    from keras_vit.training.multi_worker import DistributedTrainer
    from keras_vit.training.strategy import check_jit_compile, get_strategy, validate_global_batch

    digits = load_digits()
    x = ((digits.images[:256] / 16.0 - 0.3050) / 0.3761).astype("float32")[..., None]
    y = digits.target[:256].astype("int32")
    arch = dict(image_size=8, patch_size=2, num_channels=1, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64,
                num_classes=10)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def build():
        keras.utils.set_random_seed(0)
        return keras_vit.ViT(**arch), keras.optimizers.SGD(0.01)

    def fit(strategy):
        with strategy.scope():
            model, optimizer = build()
            model.compile(optimizer, loss)
        model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    out = {}
    mirrored = get_strategy("mirrored")
    out["replicas"] = mirrored.num_replicas_in_sync
    out["initial"] = build()[0].get_weights()
    out["single"] = fit(tf.distribute.get_strategy())
    out["mirrored_fit"] = fit(mirrored)
    with mirrored.scope():
        model, optimizer = build()
    DistributedTrainer(model, optimizer, loss, global_batch_size=32, strategy=mirrored).fit(
        tf.data.Dataset.from_tensor_slices((x, y)), epochs=2, verbose=False)
    out["mirrored_loop"] = model.get_weights()

    # the wrappers' custom train steps scale their loss per replica like fit does
    from keras_vit.training.adversarial import AdversarialTrainer, PixelSpace
    from keras_vit.training.distillation import Distiller

    def wrapped(strategy, kind):
        with strategy.scope():
            model, optimizer = build()
            if kind == "distill":
                teacher = keras_vit.ViT(**arch)
                teacher.get_layer("head").set_weights([np.random.default_rng(1).normal(size=(32, 10)).astype("float32"),
                                                       np.zeros(10, "float32")])
                wrapper = Distiller(model, teacher, mode="soft", temperature=2.0)
            else:
                wrapper = AdversarialTrainer(model, epsilon=0.1, steps=2, random_start=False,
                                             pixels=PixelSpace([0.3050], [0.3761]))
            wrapper.compile(optimizer)
        wrapper.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        return model.get_weights()

    for kind in ("distill", "adversarial"):
        out[kind + "_single"] = wrapped(tf.distribute.get_strategy(), kind)
        out[kind + "_mirrored"] = wrapped(mirrored, kind)
    errors = []
    for call in (lambda: validate_global_batch(33, mirrored), lambda: check_jit_compile(True, mirrored)):
        try:
            call()
        except ValueError as error:
            errors.append(str(error))
    out["errors"] = errors
    out["auto_jit"] = check_jit_compile("auto", mirrored)
    np.save(sys.argv[1], np.array(out, dtype=object), allow_pickle=True)
""")


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    result_path = tmp_path / "result.npy"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    completed = subprocess.run(
        [sys.executable, str(script), str(result_path)],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = np.load(result_path, allow_pickle=True).item()
    assert out["replicas"] == 2
    for key in ("mirrored_fit", "mirrored_loop"):
        for single, mirrored in zip(out["single"], out[key]):
            np.testing.assert_allclose(mirrored, single, rtol=0, atol=1e-5, err_msg=key)
    for kind in ("distill", "adversarial"):
        for single, mirrored in zip(out[kind + "_single"], out[kind + "_mirrored"]):
            np.testing.assert_allclose(mirrored, single, rtol=0, atol=1e-5, err_msg=kind)
    # the runs trained (so matching weights mean matching training, not untouched initial values)
    assert max(np.abs(a - b).max() for a, b in zip(out["initial"], out["single"])) > 1e-2
    assert "does not divide across the 2 replicas" in out["errors"][0] and "e.g. 32 or 34" in out["errors"][0]
    assert "keras-team/keras#19005" in out["errors"][1]
    assert out["auto_jit"] is False
