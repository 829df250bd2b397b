"""The layers and models run on a second Keras backend (JAX on CPU), so they stay backend-agnostic."""

import textwrap

import numpy as np

from tests.backend_runs import outputs_on_tensorflow_and_jax


def test_layers_and_vit_run_on_jax_with_same_outputs_as_tensorflow(tmp_path):
    script = textwrap.dedent(
        """
        import os, sys
        import numpy as np
        import keras, keras_vit
        assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
        keras.utils.set_random_seed(0)
        model = keras_vit.DeiT(image_size=16, patch_size=4, hidden_dim=16, depth=2, num_heads=2, mlp_dim=32,
                               num_classes=3, num_register_tokens=1, layer_scale_init=0.1, qk_norm=True)
        weights = sys.argv[1]
        if os.path.exists(weights):
            model.load_weights(weights)
        else:
            rng = np.random.default_rng(0)
            model.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.2 for w in model.get_weights()])
            model.save_weights(weights)
        x = np.random.default_rng(1).standard_normal((2, 16, 16, 3)).astype("float32")
        out = keras.ops.convert_to_numpy(model(x))
        attn = keras.ops.convert_to_numpy(model.forward_intermediates(x)["attention"][1])
        np.save(sys.argv[2], np.concatenate([out.ravel(), attn.ravel()]))
        """
    )
    weights = str(tmp_path / "w.weights.h5")
    results = outputs_on_tensorflow_and_jax(script, tmp_path, weights, PATH="/usr/bin:/bin", HOME=str(tmp_path))
    np.testing.assert_allclose(results["jax"], results["tensorflow"], atol=1e-4)
