"""LiteRT and ONNX files against the Keras model (1e-4), at batch sizes 1 and 7."""

import json

import numpy as np
import pytest

from keras_vit import export


def normalised_batch(batch_size):
    return np.random.default_rng(batch_size).normal(size=(batch_size, 32, 32, 3)).astype("float32")


def check_litert(model, tmp_path):
    path = export.litert(model, str(tmp_path / "model.tflite"))
    for batch_size in (1, 7):
        images = normalised_batch(batch_size)
        out = export.run_litert(path, images)
        assert out.shape == (batch_size, 10)
        np.testing.assert_allclose(out, np.asarray(model(images)), rtol=0, atol=1e-4)


def check_onnx(model, tmp_path):
    import onnx

    meta = export.metadata_for_model(model, mean=(0.5,) * 3, std=(0.5,) * 3)
    path = export.onnx(model, str(tmp_path / "model.onnx"), meta=meta)
    graph = onnx.load(path)
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert "Erf" in ops and "Erfc" not in ops  # exact GELU kept as erf
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 0  # dynamic batch
    stored = json.loads({p.key: p.value for p in graph.metadata_props}["keras_vit"])
    assert stored["input_size"] == [32, 32] and stored["mean"] == [0.5, 0.5, 0.5]
    for batch_size in (1, 7):
        images = normalised_batch(batch_size)
        np.testing.assert_allclose(export.run_onnx(path, images), np.asarray(model(images)), rtol=0, atol=1e-4)


def test_vit_litert(vit, tmp_path):
    check_litert(vit, tmp_path)


def test_vit_onnx(vit, tmp_path):
    check_onnx(vit, tmp_path)


@pytest.mark.slow
def test_distilled_deit_litert_and_onnx(deit, tmp_path):
    check_litert(deit, tmp_path)
    check_onnx(deit, tmp_path)


def test_bad_suffixes_are_named(vit, tmp_path):
    with pytest.raises(ValueError, match=r"'.tflite'.*Received: path="):
        export.litert(vit, str(tmp_path / "model.tfl"))
    with pytest.raises(ValueError, match=r"'.onnx'.*Received: path="):
        export.onnx(vit, str(tmp_path / "model.pb"))


def test_headless_model_exports_features(tmp_path):
    import onnxruntime

    import keras_vit

    backbone = keras_vit.ViT(
        image_size=32, patch_size=8, hidden_dim=32, depth=1, num_heads=2, mlp_dim=32, num_classes=0
    )
    path = export.onnx(backbone, str(tmp_path / "features.onnx"))
    assert [o.name for o in onnxruntime.InferenceSession(path).get_outputs()] == ["features"]
    images = normalised_batch(2)
    np.testing.assert_allclose(export.run_onnx(path, images), np.asarray(backbone(images)), rtol=0, atol=1e-4)
