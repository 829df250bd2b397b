"""What `jit_compile="auto"` means for keras_vit training: XLA on CPU exactly when the compute dtype is float32."""

import pytest
import tensorflow as tf

from keras_vit.recipes import prepare
from keras_vit.training.xla import resolve_jit_compile

DEFAULT = tf.distribute.get_strategy()


@pytest.mark.parametrize("setting, policy, gpus, expected", [
    ("auto", "float32", [], True),            # XLA train steps measured faster on CPU in float32
    ("auto", "mixed_bfloat16", [], False),    # XLA:CPU loses oneDNN's bf16 matmuls
    ("auto", "float32", [(8, 0)], "auto"),    # GPU: Keras' own choice (XLA on)
    (False, "float32", [], False),            # the user's demand is kept
    (True, "mixed_bfloat16", [], True),
])
def test_auto_follows_the_compute_dtype_on_cpu(setting, policy, gpus, expected):
    assert resolve_jit_compile(setting, policy, DEFAULT, gpus=gpus) == expected


def test_bad_setting_is_rejected():
    with pytest.raises(ValueError, match=r"True, False or 'auto'.*jit_compile='yes'"):
        resolve_jit_compile("yes", "float32", DEFAULT, gpus=[])


@pytest.mark.parametrize("mixed_precision, expected", [(False, True), (True, False)])
def test_recipes_compile_their_train_step_by_that_rule(tmp_path, mixed_precision, expected):
    parts = prepare("digits_vit", run_dir=str(tmp_path), model_overrides=dict(depth=1, hidden_dim=16, num_heads=2,
                    mlp_dim=32), tensorboard=False, verbose=0, mixed_precision=mixed_precision)
    assert parts.train_model.jit_compile is expected
