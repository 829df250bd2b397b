"""`import keras_vit` reaches every subpackage as an attribute, imports the heavy ones only when used,
and still registers what saved runs need for `keras.saving.load_model`."""

import os
import subprocess
import sys

import keras
import numpy as np

import keras_vit
from keras_vit.training import FusedAdam, WarmupCosine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUBPACKAGES = ("data", "export", "layers", "models", "recipes", "training", "visualize", "weights")


def python(code: str) -> str:
    """Runs `code` in a fresh interpreter (nothing imported yet) and returns its stdout."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_subpackages_are_attributes_listed_in_all_and_dir():
    for name in SUBPACKAGES:
        assert getattr(keras_vit, name).__name__ == f"keras_vit.{name}"
        assert name in keras_vit.__all__
        assert name in dir(keras_vit)
    assert callable(keras_vit.export.saved_model)
    assert callable(keras_vit.visualize.attention_rollout)


def test_unknown_attribute_raises_attribute_error():
    try:
        keras_vit.exports  # noqa: B018
    except AttributeError as error:
        assert "'keras_vit' has no attribute 'exports'" in str(error)
    else:
        raise AssertionError("keras_vit.exports did not raise AttributeError")


def test_import_is_lazy_until_a_subpackage_is_used():
    out = python(
        "import sys, keras_vit\n"
        "lazy = ['data', 'export', 'recipes', 'visualize', 'weights']\n"
        "print(sorted(n for n in lazy if f'keras_vit.{n}' in sys.modules))\n"
        "keras_vit.export.saved_model\n"
        "print('keras_vit.export' in sys.modules, 'keras_vit.visualize' in sys.modules)\n"
    )
    assert out.splitlines() == ["[]", "True False"]


def test_load_model_of_a_saved_run_after_a_plain_import(tmp_path):
    model = keras_vit.ViT(image_size=8, patch_size=4, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32, num_classes=3)
    schedule = WarmupCosine(peak_lr=1e-3, total_steps=10, warmup_steps=2)
    model.compile(optimizer=FusedAdam(learning_rate=schedule), loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    model.fit(images, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    expected = model.predict(images, verbose=0)
    np.save(tmp_path / "images.npy", images)
    out = python(
        "import keras, keras_vit, numpy as np\n"
        f"model = keras.saving.load_model({str(path)!r})\n"
        "print(type(model).__name__, type(model.optimizer).__name__, type(model.optimizer._learning_rate).__name__)\n"
        f"np.save({str(tmp_path / 'loaded.npy')!r}, model.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0))\n"
    )
    assert out.split() == ["ViT", "FusedAdam", "WarmupCosine"]
    np.testing.assert_allclose(np.load(tmp_path / "loaded.npy"), expected, rtol=1e-5, atol=1e-6)
    assert isinstance(keras.saving.get_registered_object("keras_vit>FusedAdam"), type)
