"""The precision policy: 'auto' picks mixed bfloat16 only on native-bf16 hardware; bf16 runs save, load and export."""

import os

import keras
import numpy as np
import pytest

from keras_vit.recipes import Recipe, run
from keras_vit.training import precision

TINY = dict(
    model_overrides=dict(depth=1, hidden_dim=16, num_heads=2, mlp_dim=32),
    epochs=1,
    steps_per_epoch=2,
    batch_size=32,
    tensorboard=False,
    verbose=0,
    warmup_epochs=0,
)


@pytest.mark.parametrize(
    "setting, cpu_bf16, gpus, expected",
    [
        (False, True, [], "float32"),
        (False, True, [(9, 0)], "float32"),
        (True, False, [], "mixed_bfloat16"),  # asked for: honoured even where slower
        (True, True, [(7, 5)], "mixed_float16"),
        ("auto", True, [], "mixed_bfloat16"),  # AVX512_BF16 / AMX CPU
        ("auto", False, [], "float32"),  # bf16 emulated on this CPU: slower, so no
        ("auto", False, [(8, 0)], "mixed_bfloat16"),  # Ampere and newer
        ("auto", True, [(8, 0), (7, 0)], "float32"),  # one pre-Ampere GPU: bf16 emulated there
    ],
)
def test_resolve_policy(setting, cpu_bf16, gpus, expected):
    assert precision.resolve_policy(setting, cpu_bf16=cpu_bf16, gpus=gpus) == expected


@pytest.mark.parametrize(
    "setting, width, gpus, expected",
    [
        ("auto", 64, [], "float32"),  # the digits model: bf16 measured no faster on this CPU
        ("auto", 128, [], "mixed_bfloat16"),
        ("auto", 768, [], "mixed_bfloat16"),
        ("auto", 64, [(8, 0)], "mixed_bfloat16"),  # the width limit is the CPU's
        (True, 16, [], "mixed_bfloat16"),  # asked for: honoured
    ],
)
def test_auto_on_a_cpu_needs_a_wide_enough_model(setting, width, gpus, expected):
    assert precision.resolve_policy(setting, cpu_bf16=True, gpus=gpus, width=width) == expected


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nflags\t\t: other\n")
    flags = precision.cpu_flags(str(cpuinfo))
    assert flags == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert precision.cpu_has_bf16(flags) and not precision.cpu_has_bf16({"avx512f"})
    assert precision.cpu_has_bf16({"amx_bf16"})
    assert precision.cpu_flags(str(tmp_path / "missing")) == set()


def test_bad_settings_are_rejected():
    for bad in ("yes", 1, None, "bfloat16"):
        with pytest.raises(ValueError, match=r"True, False or 'auto'.*Received: mixed_precision="):
            precision.resolve_policy(bad, cpu_bf16=True, gpus=[])
    with pytest.raises(ValueError, match=r"mixed_precision.*Received: mixed_precision='fast'"):
        Recipe(mixed_precision="fast")


def test_recipes_default_to_auto():
    assert Recipe().mixed_precision == "auto"


def test_mixed_bfloat16_run_saves_loads_and_exports(tmp_path):
    from keras_vit import export

    result = run("digits_vit", run_dir=str(tmp_path / "run"), mixed_precision=True, **TINY)
    assert result.model.get_layer("block_0").dtype_policy.name == "mixed_bfloat16"
    assert result.model.get_layer("block_0").attn.qkv.kernel.dtype == "float32"  # master weights stay float32
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    assert result.metrics["precision"] == "mixed_bfloat16" and result.metrics["xla"] is False  # no XLA in bf16
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype("float32")
    expected = np.asarray(result.model(images, training=False))
    assert expected.dtype == np.float32
    loaded = keras.saving.load_model(os.path.join(result.run_dir, "model.keras"))
    assert loaded.get_layer("block_0").dtype_policy.name == "mixed_bfloat16"  # layers keep their policy
    for ours, theirs in zip(result.model.weights, loaded.weights, strict=True):
        assert ours.path == theirs.path
        np.testing.assert_array_equal(np.asarray(theirs), np.asarray(ours))
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), expected, rtol=2**-6, atol=2**-6)
    path = export.saved_model(
        loaded, str(tmp_path / "served" / "1"), class_names=[str(i) for i in range(10)], warmup=False, verify=True
    )  # the default tolerance follows the bf16 policy
    # bfloat16 activations: a rounding step (2**-8 relative) apart where the graph's resize differs slightly,
    # so the tolerance scales with the largest feature.
    features = np.asarray(loaded.feature_extractor()(images))
    atol = 2**-5 * max(1.0, float(np.abs(features).max()))
    diffs = export.verify_saved_model(loaded, path, atol=atol)["max_abs_diff"]
    assert set(diffs) == {"logits", "features"}
