"""What `jit_compile="auto"` means for keras_vit training: XLA on CPU for float32 models narrower than 128."""

import pytest
import tensorflow as tf

from keras_vit.recipes import prepare
from keras_vit.training.xla import resolve_jit_compile

DEFAULT = tf.distribute.get_strategy()


@pytest.mark.parametrize(
    "setting, policy, gpus, width, expected",
    [
        ("auto", "float32", [], 64, True),  # XLA train steps measured faster on a narrow model
        ("auto", "float32", [], None, True),  # width unknown: treated as narrow
        ("auto", "float32", [], 128, False),  # 192-768 wide: no faster, or slower (CIFAR model 0.87-0.92x)
        ("auto", "mixed_bfloat16", [], 64, False),  # XLA:CPU loses oneDNN's bf16 matmuls
        ("auto", "float32", [(8, 0)], 768, "auto"),  # GPU: Keras' own choice (XLA on)
        (False, "float32", [], 64, False),  # the user's demand is kept
        (True, "mixed_bfloat16", [], 768, True),
    ],
)
def test_auto_follows_the_compute_dtype_and_width_on_cpu(setting, policy, gpus, width, expected):
    assert resolve_jit_compile(setting, policy, DEFAULT, gpus=gpus, width=width) == expected


def test_bad_setting_is_rejected():
    with pytest.raises(ValueError, match=r"True, False or 'auto'.*jit_compile='yes'"):
        resolve_jit_compile("yes", "float32", DEFAULT, gpus=[])


@pytest.mark.parametrize(
    "mixed_precision, width, expected", [(False, 16, True), (True, 16, False), (False, 128, False)]
)
def test_recipes_compile_their_train_step_by_that_rule(tmp_path, mixed_precision, width, expected):
    parts = prepare(
        "digits_vit",
        run_dir=str(tmp_path),
        model_overrides=dict(depth=1, hidden_dim=width, num_heads=2, mlp_dim=32),
        tensorboard=False,
        verbose=0,
        mixed_precision=mixed_precision,
    )
    assert parts.train_model.jit_compile is expected
