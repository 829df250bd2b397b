"""ViT / DeiT models: outputs, serialization, resolution change, mixed precision, training, errors."""

import keras
import numpy as np
import pytest
import torch

import keras_vit

TINY = dict(image_size=32, patch_size=8, hidden_dim=32, depth=2, num_heads=2, mlp_dim=64, num_classes=5)
FEATURES = dict(TINY, layer_scale_init=0.1, num_register_tokens=2, qk_norm=True, drop_path_rate=0.1)
ARCHITECTURES = {
    "vit": dict(TINY),
    "vit_gap_registers_layerscale": dict(FEATURES, class_token=False, pooling="gap", pos_embed_prefix=False),
    "vit_prelogits_sincos": dict(TINY, representation_size=24, position_embedding="sincos"),
    "deit_distilled": dict(FEATURES, distillation_token=True),
    "vit_non_square": dict(TINY, image_size=(16, 40), patch_size=(8, 4)),
}


def images_for(model, batch=3, seed=0):
    h, w = model.config.image_size
    return np.random.default_rng(seed).standard_normal((batch, h, w, model.config.num_channels)).astype("float32")


def randomize_heads(model, seed=1):
    """The zoo zero-initialises heads (ViT paper); tests need outputs that depend on every layer."""
    rng = np.random.default_rng(seed)
    for name in ("head", "head_dist"):
        if any(layer.name == name for layer in model.layers):
            layer = model.get_layer(name)
            layer.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.1 for w in layer.get_weights()])
    return model


@pytest.fixture(params=list(ARCHITECTURES), ids=list(ARCHITECTURES))
def model(request):
    return randomize_heads(keras_vit.ViT(**ARCHITECTURES[request.param]))


def test_output_shapes_and_intermediates(model):
    x = images_for(model)
    c = model.config
    assert tuple(model(x).shape) == (3, c.num_classes)
    out = model.forward_intermediates(x)
    tokens = c.num_prefix_tokens + c.grid_size[0] * c.grid_size[1]
    assert len(out["blocks"]) == len(out["attention"]) == c.depth
    assert tuple(out["blocks"][0].shape) == (3, tokens, c.hidden_dim)
    assert tuple(out["attention"][-1].shape) == (3, c.num_heads, tokens, tokens)
    np.testing.assert_allclose(np.sum(out["attention"][0], -1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["logits"], model(x), atol=1e-5)
    width = c.representation_size or c.hidden_dim
    assert tuple(model.feature_extractor()(x).shape) == (3, width)


def test_keras_file_round_trip_safe_mode_identical_outputs(model, tmp_path):
    x = images_for(model)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_get_config_from_config_round_trip(model):
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(images_for(model)), model(images_for(model)), atol=1e-6)


def test_training_step_changes_every_trainable_variable(model):
    x, y = images_for(model, batch=4), np.arange(4) % model.config.num_classes
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    unchanged = [v.path for v, b in zip(model.trainable_variables, before) if np.array_equal(v.numpy(), b)]
    assert not unchanged


def test_deit_averages_heads_at_inference_and_exposes_both():
    model = randomize_heads(keras_vit.DeiT(**ARCHITECTURES["deit_distilled"]))
    x = images_for(model)
    heads = model.heads_model()(x)
    np.testing.assert_allclose(model(x), (heads["cls"] + heads["dist"]) / 2, atol=1e-6)
    assert not np.allclose(heads["cls"], heads["dist"])
    with pytest.raises(ValueError, match="distillation_token=True"):
        keras_vit.ViT(**TINY).heads_model()


def test_named_variant_with_overrides():
    model = keras_vit.ViT("deit_tiny_distilled_patch16_224", num_classes=10, image_size=64, depth=2)
    assert model.config.distillation_token and model.config.hidden_dim == 192
    assert model.output.shape == (None, 10)
    assert model.get_config()["variant"] == "deit_tiny_distilled_patch16_224"


def test_headless_backbone_returns_features():
    model = keras_vit.ViT(**dict(TINY, num_classes=0))
    assert tuple(model(images_for(model)).shape) == (3, 32)
    assert "head" not in [layer.name for layer in model.layers]


@pytest.mark.parametrize("size", [64, (24, 48)])
def test_resampled_model_runs_and_matches_timm_resampling(size):
    model = keras_vit.ViT(**dict(TINY, num_register_tokens=1))
    bigger = model.with_image_size(size)
    assert tuple(bigger(images_for(bigger)).shape) == (3, 5)
    old, new = model.get_layer("pos_embed").embeddings.numpy(), bigger.get_layer("pos_embed").embeddings.numpy()
    np.testing.assert_array_equal(new[:, :2], old[:, :2])  # prefix tokens kept
    grid = torch.from_numpy(old[:, 2:]).reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=bigger.config.grid_size, mode="bicubic", antialias=True)
    np.testing.assert_allclose(new[:, 2:], ref.permute(0, 2, 3, 1).reshape(1, -1, 32).numpy(), atol=1e-5)


def test_resample_224_to_384_runs():
    model = keras_vit.ViT("vit_tiny_patch16_224", depth=1)
    bigger = model.with_image_size(384)
    assert bigger.get_layer("pos_embed").embeddings.shape == (1, 577, 192)
    assert tuple(bigger(np.zeros((1, 384, 384, 3), "float32")).shape) == (1, 1000)


def test_resample_to_same_size_is_identity(model):
    same = model.with_image_size(model.config.image_size)
    for a, b in zip(model.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(same(images_for(model)), model(images_for(model)))


def test_mixed_bfloat16_runs_with_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = randomize_heads(keras_vit.DeiT(**ARCHITECTURES["deit_distilled"]))
    assert model.get_layer("block_0").compute_dtype == "bfloat16"
    out = model(images_for(model))
    assert out.dtype == "float32"
    intermediates = model.forward_intermediates(images_for(model))
    assert intermediates["attention"][0].dtype == "float32"
    keras.mixed_precision.set_global_policy("float32")
    reference = randomize_heads(keras_vit.DeiT(**ARCHITECTURES["deit_distilled"]))
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(out, reference(images_for(model)), atol=0.05)


def test_recipe_hooks_split_variables():
    model = keras_vit.ViT(**FEATURES)
    no_decay = {v.path for v in model.no_weight_decay_variables()}
    assert any("pos_embed" in p for p in no_decay) and any("reg_token" in p for p in no_decay)
    assert any("gamma" in p for p in no_decay) and not any(p.endswith("qkv/kernel") for p in no_decay)
    groups = model.layer_groups()
    assert len(groups) == model.config.depth + 2
    assert sum(len(g) for g in groups) == len(model.trainable_variables)


@pytest.mark.parametrize(
    "arch,message",
    [
        (dict(TINY, hidden_dim=30, num_heads=4), r"`hidden_dim` \(30\) must be divisible by `num_heads` \(4\)"),
        (dict(TINY, image_size=30), "Image height 30 is not divisible by patch size 8"),
        (dict(TINY, dropout_rate=-0.1), "dropout_rate=-0.1"),
        (dict(TINY, drop_path_rate=-0.5), "drop_path_rate=-0.5"),
        (dict(TINY, attention_dropout_rate=1.0), "attention_dropout_rate=1.0"),
        (dict(TINY, pooling="max"), "pooling='max'"),
        (dict(TINY, class_token=False), "needs a class token"),
        (dict(TINY, num_classes=-1), "num_classes=-1"),
        (dict(TINY, depth=0), "depth=0"),
        (dict(TINY, hidden_size=32), "Unknown ViT argument"),
    ],
)
def test_bad_configurations_fail_at_build(arch, message):
    with pytest.raises(ValueError, match=message):
        keras_vit.ViT(**arch)


@pytest.mark.parametrize(
    "shape,message",
    [
        ((2, 32, 32, 1), "Expected 3 channels"),
        ((32, 32, 3), "rank 4"),
        ((2, 16, 16, 3), r"Expected images of size \(32, 32\), received \(16, 16\).*with_image_size"),
    ],
)
def test_wrong_images_at_call_time(shape, message):
    model = keras_vit.ViT(**TINY)
    with pytest.raises(ValueError, match=message):
        model(np.zeros(shape, "float32"))
    with pytest.raises(ValueError, match=message):
        model.forward_intermediates(np.zeros(shape, "float32"))


def test_inference_copy_holds_bfloat16_weights_and_follows_float32(model):
    """Weights stored in bfloat16 once (heads float32); logits within bf16 rounding of the float32 model's."""
    from keras_vit.models import inference_copy

    copy = inference_copy(model, "bfloat16")
    assert type(copy) is type(model) and copy.config == model.config
    heads = {"head", "head_dist"}
    for variable in copy.weights:
        expected = "float32" if variable.path.split("/")[0] in heads else "bfloat16"
        assert variable.dtype == expected, variable.path
    x = images_for(model)
    reference, got = model.predict(x, verbose=0), copy.predict(x, verbose=0)
    assert got.dtype == np.float32
    assert np.abs(got - reference).max() <= 0.05 * np.abs(reference).max() + 1e-3
    intermediates = copy.forward_intermediates(x)
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in intermediates["attention"])


def test_inference_copy_has_no_per_call_weight_casts():
    """Under mixed_bfloat16 every weight is cast to bfloat16 on every call; the bfloat16 copy casts none.

    (Layer-norm parameters are cast up to float32, where the statistics are computed, in both.)
    """
    import tensorflow as tf

    from keras_vit.models import inference_copy

    mixed = keras_vit.ViT(**TINY, dtype="mixed_bfloat16")
    copy = inference_copy(mixed, "bfloat16")
    x = tf.constant(images_for(mixed))

    def weight_casts(m):
        graph = tf.function(lambda images: m(images)).get_concrete_function(x).graph
        casts = [op for op in graph.get_operations() if op.type == "Cast" and op.get_attr("DstT") == tf.bfloat16]
        return sum(op.inputs[0].op.type == "ReadVariableOp" for op in casts)

    assert weight_casts(mixed) >= 4 * TINY["depth"]  # at least the qkv, proj, fc1 and fc2 kernels
    assert weight_casts(copy) == 0


def test_inference_copy_rejects_bad_arguments():
    from keras_vit.models import inference_copy

    with pytest.raises(ValueError, match=r"Received: dtype='int8'"):
        inference_copy(keras_vit.ViT(**TINY), "int8")
    with pytest.raises(ValueError, match=r"Received: model=Sequential"):
        inference_copy(keras.Sequential([keras.layers.Dense(2)]), "bfloat16")
