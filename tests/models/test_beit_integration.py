"""BEiT through the rest of keras_vit: visualization, SavedModel export, and the JAX backend."""

import textwrap

import numpy as np
import pytest

import keras_vit
from keras_vit.models.beit import BEiT
from tests.backend_runs import outputs_on_tensorflow_and_jax

ARCH = dict(image_size=32, patch_size=8, hidden_dim=32, depth=2, num_heads=4, mlp_dim=64, num_classes=3)


def random_beit(seed=0, **overrides):
    model = BEiT(**dict(ARCH, **overrides))
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(0.2 * rng.standard_normal(variable.shape).astype("float32"))
    return model


def images(batch=2, seed=1):
    return np.random.default_rng(seed).standard_normal((batch, 32, 32, 3)).astype("float32")


def test_attention_rollout_and_maps_on_a_beit():
    model = random_beit()
    rollout = keras_vit.visualize.attention_rollout(model, images())
    assert rollout.shape == (2, 4, 4) and np.all(rollout > 0)
    maps = keras_vit.visualize.attention_maps(model, images(), layer=-1, token="mean")
    assert maps.shape == (2, 4, 4, 4)


def test_saved_model_export_serves_the_model_logits_and_features(tmp_path):
    import tensorflow as tf

    model = random_beit(seed=2)
    # verify=True reloads the SavedModel and compares its logits and features with the Keras model's
    path = keras_vit.export.saved_model(
        model, str(tmp_path / "beit" / "1"), mean=(0.5,) * 3, std=(0.5,) * 3, verify=True
    )
    assert set(tf.saved_model.load(path).signatures) == {"serving_default", "serve_image_bytes", "features"}


@pytest.mark.slow  # two fresh interpreters importing TensorFlow and JAX: about a minute on 2 cores
def test_runs_on_jax_with_the_outputs_of_tensorflow(tmp_path):
    script = textwrap.dedent(
        """
        import os, sys
        import numpy as np
        import keras
        from keras_vit.models.beit import BEiT
        assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
        model = BEiT(image_size=32, patch_size=8, hidden_dim=32, depth=2, num_heads=4, mlp_dim=64, num_classes=3,
                     shared_relative_position_bias=True, position_embedding="learned")
        if os.path.exists(sys.argv[1]):
            model.load_weights(sys.argv[1])
        else:
            rng = np.random.default_rng(0)
            model.set_weights([0.2 * rng.standard_normal(w.shape).astype("float32") for w in model.get_weights()])
            model.save_weights(sys.argv[1])
        x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype("float32")
        attention = model.forward_intermediates(x)["attention"][1]
        np.save(sys.argv[2], np.concatenate([keras.ops.convert_to_numpy(model(x)).ravel(),
                                             keras.ops.convert_to_numpy(attention).ravel()]))
        """
    )
    results = outputs_on_tensorflow_and_jax(script, tmp_path, str(tmp_path / "w.weights.h5"))
    np.testing.assert_allclose(results["jax"], results["tensorflow"], atol=1e-4)
