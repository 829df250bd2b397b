"""EVA runs on JAX (CPU) with the outputs it has on TensorFlow: rotary tables, grouped heads, MAP head, RMSNorm."""

import textwrap

import numpy as np
import pytest

from tests.backend_runs import outputs_on_tensorflow_and_jax

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import keras, keras_vit
    assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
    keras.utils.set_random_seed(0)
    common = dict(image_size=16, patch_size=4, hidden_dim=32, depth=2, num_heads=4, mlp_dim=48, num_classes=3)
    models = [
        keras_vit.EVA(**common, rope="mixed", rope_grid_indexing="xy", mlp_kind="swiglu", mlp_inner_norm=True,
                      layer_scale_init=0.1, pooling="token"),
        keras_vit.EVA(**common, rope="centered", rope_rotate_half=True, position_embedding="none",
                      dynamic_image_size=True, num_register_tokens=2, norm="rms", qk_norm=True, qkv_fused=False,
                      num_kv_heads=2, key_bias=True, pooling="map", pool_num_heads=2, pre_norm=True),
    ]
    x = np.random.default_rng(1).standard_normal((2, 16, 16, 3)).astype("float32")
    outputs = []
    for index, model in enumerate(models):
        weights = f"{sys.argv[1]}_{index}.weights.h5"
        if os.path.exists(weights):
            model.load_weights(weights)
        else:
            rng = np.random.default_rng(index)
            model.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.2 for w in model.get_weights()])
            model.save_weights(weights)
        outputs.append(keras.ops.convert_to_numpy(model(x)).ravel())
    outputs.append(keras.ops.convert_to_numpy(models[1](np.ones((1, 24, 20, 3), "float32"))).ravel())
    np.save(sys.argv[2], np.concatenate(outputs))
    """
)


@pytest.mark.slow  # about 4 minutes on 2 CPU cores (two interpreters, JAX traces every layer)
def test_eva_runs_on_jax_with_same_outputs_as_tensorflow(tmp_path):
    results = outputs_on_tensorflow_and_jax(SCRIPT, tmp_path, str(tmp_path / "w"))
    np.testing.assert_allclose(results["jax"], results["tensorflow"], atol=1e-4)
