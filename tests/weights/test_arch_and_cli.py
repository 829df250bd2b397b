"""`infer_arch` (architecture from tensor shapes) and the `keras-vit convert` command."""

import numpy as np
import pytest

import keras_vit
from keras_vit.cli import run
from keras_vit.weights import CheckpointError, infer_arch, model_state_dict, save_weights
from keras_vit.weights.cli import convert
from tests.weights.conftest import TINY, randomize

ARCHS = {
    "plain": dict(TINY),
    "dinov2_like": dict(TINY, num_register_tokens=4, layer_scale_init=1e-5, pos_embed_prefix=False),
    "gap_registers": dict(TINY, class_token=False, num_register_tokens=2, pos_embed_prefix=False, pooling="gap"),
    "distilled_prelogits": dict(TINY, distillation_token=True, representation_size=24),
    "qk_norm_nonstandard_width": dict(TINY, hidden_dim=40, num_heads=5, qk_norm=True, qkv_bias=False),
}


@pytest.mark.parametrize("kind", sorted(ARCHS))
def test_infer_arch_rebuilds_the_same_architecture(kind):
    arch = ARCHS[kind]
    model = keras_vit.ViT(**arch)
    inferred = infer_arch(model_state_dict(model), num_heads=None if arch["hidden_dim"] == 40 else 2)
    rebuilt = keras_vit.ViT(**inferred)
    expected = model.config.to_dict()
    got = rebuilt.config.to_dict()
    for key in expected:
        if key == "fc_norm":
            assert rebuilt.config.use_fc_norm == model.config.use_fc_norm
        else:
            assert got[key] == expected[key], key


def test_infer_arch_needs_heads_for_a_nonstandard_width():
    state = model_state_dict(keras_vit.ViT(**dict(TINY, hidden_dim=40, num_heads=5)))
    with pytest.raises(CheckpointError, match=r"number of attention heads for width 40; pass num_heads"):
        infer_arch(state)


def test_convert_safetensors_to_keras_and_npz_keys_to_safetensors(tiny, batch, tmp_path):
    source = tiny(seed=1, num_register_tokens=2)
    path = save_weights(source, str(tmp_path / "timm.safetensors"))
    summary = convert(path, str(tmp_path / "out.weights.h5"), num_heads=2)
    assert "head loaded" in summary
    model = keras_vit.ViT(**dict(TINY, num_register_tokens=2))
    model.load_pretrained(str(tmp_path / "out.weights.h5"))
    np.testing.assert_array_equal(model(batch), source(batch))
    # Pure key conversion to safetensors, then resampled into a bigger model by name.
    summary = convert(path, str(tmp_path / "again.safetensors"))
    assert "tensors in timm keys" in summary
    bigger = keras_vit.ViT(**dict(TINY, num_register_tokens=2, image_size=32))
    with pytest.warns(UserWarning, match="2x2 to a 4x4"):
        bigger.load_pretrained(str(tmp_path / "again.safetensors"))


def test_convert_command_line(tiny, tmp_path, capsys):
    source = randomize(keras_vit.ViT("vit_digits_patch2_8"), seed=2)
    path = save_weights(source, str(tmp_path / "digits.safetensors"))
    out = str(tmp_path / "digits.weights.h5")
    with (
        pytest.raises(SystemExit) as exit_info,
        pytest.warns(UserWarning, match=r"Classifier head not loaded: .*head.bias \(10\) vs \(4\)"),
    ):
        run(["keras-vit", "convert", path, out, "--model", "vit_digits_patch2_8", "--num_classes", "4"])
    assert exit_info.value.code in (None, 0)
    assert "head replaced" in capsys.readouterr().out
    model = keras_vit.ViT("vit_digits_patch2_8", num_classes=4)
    model.load_pretrained(out)
    np.testing.assert_array_equal(
        model.feature_extractor()(np.ones((1, 8, 8, 1), "float32")),
        source.feature_extractor()(np.ones((1, 8, 8, 1), "float32")),
    )
    with pytest.raises(SystemExit) as exit_info:
        run(["keras-vit", "convert", path, str(tmp_path / "x.pt")])
    assert exit_info.value.code == 2
    assert "OUT must end in '.weights.h5' or '.safetensors'" in capsys.readouterr().err


def test_convert_keras_file_needs_a_model_name(tiny, tmp_path):
    path = save_weights(tiny(), str(tmp_path / "w.weights.h5"))
    with pytest.raises(ValueError, match=r"holds no architecture; pass --model"):
        convert(path, str(tmp_path / "w.safetensors"))
