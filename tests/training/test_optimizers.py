"""Weight-decay exclusion and layer-wise learning-rate decay, checked on exact one-step updates."""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.training import LayerDecayAdamW, LayerDecaySGD, build_optimizer, layer_decay_multipliers


def _tiny_vit():
    return keras_vit.ViT(
        image_size=8, patch_size=4, num_channels=1, hidden_dim=16, depth=2, num_heads=2, mlp_dim=32, num_classes=3
    )


def _values(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def test_weight_decay_skips_biases_norms_tokens_and_positions():
    model = _tiny_vit()
    lr, wd = 0.1, 0.5
    optimizer = build_optimizer("adamw", lr, model=model, weight_decay=wd)
    before = _values(model)
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    optimizer.apply(zeros, model.trainable_variables)  # Adam's step is 0 for zero gradients: only decay acts
    skipped = {id(v) for v in model.no_weight_decay_variables()}
    names = {v.path for v in model.no_weight_decay_variables()}
    assert any("cls_token" in n for n in names) and any("embeddings" in n for n in names)
    assert any("norm1/gamma" in n for n in names) and any(n.endswith("bias") for n in names)
    decayed = 0
    for variable, old in zip(model.trainable_variables, before):
        if id(variable) in skipped:
            np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)
        else:
            np.testing.assert_allclose(variable.numpy(), old * (1 - lr * wd), rtol=1e-6, err_msg=variable.path)
            decayed += 1
    assert decayed >= 2 * 4 + 2  # qkv, proj, fc1, fc2 kernels per block, patch projection and head


def test_layer_decay_scales_each_group():
    model = _tiny_vit()
    decay, lr = 0.5, 0.1
    multipliers = layer_decay_multipliers(model, decay)
    groups = model.layer_groups()
    assert len(groups) == model.config.depth + 2
    optimizer = build_optimizer("sgd", lr, model=model, momentum=0.0, layer_decay=decay)
    before = _values(model)
    ones = [np.ones(v.shape, "float32") for v in model.trainable_variables]
    optimizer.apply(ones, model.trainable_variables)
    after = {v.path: v.numpy() for v in model.trainable_variables}
    old = {v.path: b for v, b in zip(model.trainable_variables, before)}
    for index, group in enumerate(groups):
        expected_scale = decay ** (len(groups) - 1 - index)  # embeddings smallest, head 1.0
        for variable in group:
            assert multipliers[variable.path] == pytest.approx(expected_scale)
            np.testing.assert_allclose(old[variable.path] - after[variable.path], lr * expected_scale, rtol=1e-5)


def test_layer_decay_scales_weight_decay_too():
    model = _tiny_vit()
    lr, wd, decay = 0.1, 0.5, 0.5
    optimizer = build_optimizer("adamw", lr, model=model, weight_decay=wd, layer_decay=decay)
    before = _values(model)
    optimizer.apply([np.zeros(v.shape, "float32") for v in model.trainable_variables], model.trainable_variables)
    multipliers = layer_decay_multipliers(model, decay)
    skipped = {id(v) for v in model.no_weight_decay_variables()}
    for variable, old in zip(model.trainable_variables, before):
        factor = 1.0 if id(variable) in skipped else 1 - lr * wd * multipliers[variable.path]
        np.testing.assert_allclose(variable.numpy(), old * factor, rtol=1e-6, err_msg=variable.path)


def test_config_round_trip_and_fit():
    model = _tiny_vit()
    optimizer = build_optimizer(
        "adamw", 1e-3, model=model, weight_decay=0.05, layer_decay=0.75, clip_norm=1.0, use_ema=True, ema_momentum=0.9
    )
    config = optimizer.get_config()
    assert config["global_clipnorm"] == 1.0 and config["use_ema"] and config["lr_multipliers"]
    restored = LayerDecayAdamW.from_config(config)
    assert restored.lr_multipliers == optimizer.lr_multipliers
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(8) % 3]
    before = _values(model)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert all(not np.array_equal(a, b) for a, b in zip(before, _values(model)))
    assert isinstance(build_optimizer("sgd", 0.1), LayerDecaySGD)


def test_bad_arguments():
    model = _tiny_vit()
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adam'"):
        build_optimizer("adam", 1e-3)
    with pytest.raises(ValueError, match=r"layer_decay=1\.5"):
        build_optimizer("adamw", 1e-3, model=model, layer_decay=1.5)
    with pytest.raises(ValueError, match=r"momentum=1\.0"):
        build_optimizer("sgd", 1e-3, momentum=1.0)
    with pytest.raises(ValueError, match=r"clip_norm=0"):
        build_optimizer("sgd", 1e-3, clip_norm=0)
