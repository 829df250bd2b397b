"""Everything that works for ViT works for the modern families: one small registered name per sub-family.

Each name is built at depth 2 on a 4x4 patch grid, in timm and in keras_vit, and
loaded from the timm model's perturbed `state_dict()` saved as safetensors (so no
zero head or tiny LayerScale hides a mapping error). Checked against timm: logits,
`forward_intermediates(..., output_fmt="NHWC")` maps, the pooled embedding of
`feature_extractor()` (MAP heads included) and `with_image_size`. Checked against
the model itself: `.keras` round trip with `safe_mode=True`, `layer_groups()`,
visualization, SavedModel export, mixed precision and the JAX backend.
"""

import timm  # noqa: I001  (torch/timm before TensorFlow; see tests/conftest.py)
import copy
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import safetensors.torch
import torch

import keras_vit

# name -> image size (4x4 patch grid). One registered name per sub-family.
MATRIX = {
    "vit_xsmall_patch16_clip_224": 64,  # CLIP: pre-norm, QuickGELU-free xsmall
    "vit_base_patch16_siglip_224": 64,  # SigLIP: no class token, MAP head
    "vit_base_patch16_siglip_gap_224": 64,  # SigLIP (2) average pooling
    "vit_small_patch14_reg4_dinov2": 56,  # DINOv2 with register tokens, LayerScale
    "deit3_small_patch16_224": 64,  # DeiT III: LayerScale, no_embed_class
    "aimv2_large_patch14_224": 56,  # AIMv2: RMSNorm, SwiGLU, avg pool
    "flexivit_small": 64,  # FlexiViT
    "vit_small_patch16_18x2_224": 64,  # parallel blocks (ParallelThingsBlock)
    "beit3_base_patch16_224": 64,  # BEiT-3 (vision tower)
    "eva02_tiny_patch14_224": 56,  # EVA-02: rotary, SwiGLU, inner norms
    "vit_small_patch16_dinov3": 64,  # DINOv3: centred rotary, registers
    "vit_small_patch16_rope_mixed_224": 64,  # ROPE-ViT mixed (learned frequencies)
    "vit_pe_core_tiny_patch16_384": 64,  # Perception Encoder: pre-norm, MAP head
}
NAMES = list(MATRIX)
DEPTH = 2
TOLERANCE = 1e-4


def images(size, batch=2, seed=1):
    return np.random.default_rng(seed).standard_normal((batch, size, size, 3)).astype("float32")


def to_torch(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def perturbed_timm(name, size):
    """timm's model at depth 2 and `size`, every tensor of its state dict noised."""
    torch.manual_seed(0)
    model = timm.create_model(name, depth=DEPTH, img_size=size).eval()
    generator = torch.Generator().manual_seed(0)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model


def build(name, **overrides):
    return keras_vit.create_model(name, depth=DEPTH, image_size=MATRIX[name], **overrides)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Lazily built (timm model, keras_vit model loaded from its safetensors) per name."""
    made = {}
    folder = tmp_path_factory.mktemp("matrix")

    def get(name):
        if name not in made:
            reference = perturbed_timm(name, MATRIX[name])
            path = folder / f"{name}.safetensors"
            safetensors.torch.save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
            made[name] = (reference, build(name, weights=str(path)))
        return made[name]

    return get


def assert_close(got, want, atol=TOLERANCE):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=atol, rtol=atol)


@pytest.mark.parametrize("name", NAMES)
def test_logits_and_pooled_embedding_equal_timm(name, pairs):
    reference, model = pairs(name)
    x = images(MATRIX[name])
    with torch.no_grad():
        logits = reference(to_torch(x)).numpy()
        pooled = reference.forward_head(reference.forward_features(to_torch(x)), pre_logits=True).numpy()
    assert_close(model(x), logits)
    assert_close(model.feature_extractor()(x), pooled)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("indices", [None, 1, [0, -1]], ids=["all", "last", "list"])
def test_nhwc_maps_equal_timm_forward_intermediates(name, indices, pairs):
    reference, model = pairs(name)
    x = images(MATRIX[name])
    with torch.no_grad():
        expected = reference.forward_intermediates(to_torch(x), indices=indices, intermediates_only=True)
    maps = model.forward_intermediates(x, indices=indices, output_fmt="NHWC")["blocks"]
    assert len(maps) == len(expected)
    for got, want in zip(maps, expected):
        assert tuple(got.shape) == (2, 4, 4, model.config.hidden_dim)
        assert_close(got, want.numpy().transpose(0, 2, 3, 1))


@pytest.mark.slow  # a second model per name, in both libraries
@pytest.mark.parametrize("name", NAMES)
def test_with_image_size_equals_timm_set_input_size(name, pairs):
    reference, model = pairs(name)
    size = MATRIX[name] + MATRIX[name] // 2  # a 6x6 patch grid
    resized = model.with_image_size(size)
    reference = copy.deepcopy(reference)
    reference.set_input_size(img_size=(size, size))
    x = images(size, batch=1, seed=2)
    with torch.no_grad():
        assert_close(resized(x), reference(to_torch(x)).numpy())


@pytest.mark.slow  # a .keras file written and read per name: about 3-6 s each on 2 cores
@pytest.mark.parametrize("name", NAMES)
def test_keras_round_trip_in_safe_mode(name, pairs, tmp_path):
    _, model = pairs(name)
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    x = images(MATRIX[name])
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    np.testing.assert_array_equal(np.asarray(loaded.feature_extractor()(x)), np.asarray(model.feature_extractor()(x)))


@pytest.mark.parametrize("name", NAMES)
def test_layer_groups_hold_every_trainable_variable_once(name, pairs):
    _, model = pairs(name)
    groups = model.layer_groups()
    assert len(groups) == DEPTH + 2
    assert all(groups), [len(g) for g in groups]
    grouped = [id(v) for group in groups for v in group]
    assert sorted(grouped) == sorted(id(v) for v in model.trainable_variables)


@pytest.mark.parametrize("name", NAMES)
def test_visualization_gives_finite_maps_of_the_patch_grid(name, pairs):
    _, model = pairs(name)
    x = images(MATRIX[name])
    out = keras_vit.visualize.run_intermediates(model, x)
    rollout = keras_vit.visualize.attention_rollout(model, x, token="mean", intermediates=out)
    assert rollout.shape == (2, 4, 4) and np.all(np.isfinite(rollout)) and np.all(rollout > 0)
    heads = model.config.num_heads * (2 if name == "vit_small_patch16_18x2_224" else 1)  # parallel branches' heads
    maps = keras_vit.visualize.attention_maps(model, x, layer=-1, token="mean", intermediates=out)
    assert maps.shape == (2, heads, 4, 4) and np.all(np.isfinite(maps))
    distance = keras_vit.visualize.mean_attention_distance(model, x, intermediates=out)["distance"]
    assert distance.shape == (DEPTH, heads)
    assert np.all(np.isfinite(distance)) and np.all(distance > 0)


@pytest.mark.slow  # a SavedModel export and reload per name: about 15 s each on 2 cores
@pytest.mark.parametrize("name", NAMES)
def test_saved_model_export_has_the_three_signatures(name, pairs, tmp_path):
    import tensorflow as tf

    _, model = pairs(name)
    # verify=True reloads the SavedModel and compares its logits and features with the Keras model's
    path = keras_vit.export.saved_model(model, str(tmp_path / name / "1"), verify=True)
    assert set(tf.saved_model.load(path).signatures) == {"serving_default", "serve_image_bytes", "features"}


@pytest.mark.slow  # a second model per name and a train step
@pytest.mark.parametrize("name", NAMES)
def test_mixed_bfloat16_gives_float32_logits_and_trains_every_variable(name, pairs):
    _, model = pairs(name)
    mixed = build(name, dtype="mixed_bfloat16", num_classes=10)  # a head on every model (some names have none)
    trained = {v.path: v for v in model.weights}
    rng = np.random.default_rng(0)
    for variable in mixed.weights:  # the loaded timm weights; a random 10-class head (a zero head passes no gradient)
        same = variable.path in trained and tuple(trained[variable.path].shape) == tuple(variable.shape)
        value = trained[variable.path] if same else 0.1 * rng.standard_normal(variable.shape)
        variable.assign(np.asarray(value, "float32"))
    x = images(MATRIX[name])
    logits = mixed(x)
    assert logits.dtype == "float32" and np.all(np.isfinite(np.asarray(logits)))
    float32 = build(name, num_classes=10)
    float32.set_weights([np.asarray(v) for v in mixed.weights])
    assert_close(logits, float32(x), atol=0.5)  # bfloat16 rounding only
    mixed.compile(
        optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    before = [np.array(v) for v in mixed.trainable_variables]
    mixed.train_on_batch(x, np.array([3, 7]))
    unchanged = [v.path for v, old in zip(mixed.trainable_variables, before) if np.array_equal(np.array(v), old)]
    assert not unchanged


JAX_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import keras
    import keras_vit
    assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
    folder, names = sys.argv[1], sys.argv[2:]
    for name in names:
        name, size = name.split(":")
        size = int(size)
        model = keras_vit.create_model(name, depth=2, image_size=size)
        weights = os.path.join(folder, name + ".weights.h5")
        if os.path.exists(weights):
            model.load_weights(weights)
        else:
            rng = np.random.default_rng(0)
            model.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()])
            model.save_weights(weights)
        x = np.random.default_rng(1).standard_normal((2, size, size, 3)).astype("float32")
        outputs = model.forward_intermediates(x, indices=[0, 1], output_fmt="NHWC")
        parts = [model(x), model.feature_extractor()(x), *outputs["blocks"], outputs["attention"][-1]]
        np.savez(os.path.join(folder, name + "." + os.environ["KERAS_BACKEND"] + ".npz"),
                 *[keras.ops.convert_to_numpy(p) for p in parts])
    """
)


@pytest.mark.slow  # two fresh interpreters building every representative model: a few minutes on 2 cores
def test_every_family_runs_on_jax_with_the_outputs_of_tensorflow(tmp_path):
    (tmp_path / "run.py").write_text(JAX_SCRIPT)
    for backend in ("tensorflow", "jax"):
        env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run(
            [sys.executable, str(tmp_path / "run.py"), str(tmp_path), *(f"{n}:{s}" for n, s in MATRIX.items())],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    differ = {}
    for name in NAMES:
        tf_parts, jax_parts = (np.load(tmp_path / f"{name}.{b}.npz") for b in ("tensorflow", "jax"))
        for key in tf_parts.files:
            tf_out, jax_out = tf_parts[key], jax_parts[key]
            assert tf_out.shape == jax_out.shape, (name, key)
            # float32 sums in another order differ in proportion to the tensor's scale: 1e-4 of its mean
            # magnitude (at least 1e-4 absolute). AIMv2-L's block outputs average ~7 with 1024 features.
            tolerance = TOLERANCE * max(1.0, float(np.abs(tf_out).mean()))
            error = float(np.abs(jax_out - tf_out).max())
            if error > tolerance:
                differ[f"{name}/{key}"] = (error, tolerance)
    assert not differ, differ
