"""SavedModel export: signatures against the Keras model, layout, versions, models.config."""

import importlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vit import export
from tests.export.export_helpers import CIFAR10_NAMES, EXPORT_ARGS, tiny_model


def keras_outputs(model, pixels, meta):
    logits = np.asarray(model(export.preprocess(pixels, meta), training=False))
    return logits, np.asarray(model.feature_extractor()(export.preprocess(pixels, meta)))


def check_signatures(model, path, batch_size):
    meta = export.load_metadata(path)
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "serve_image_bytes", "features"}
    pixels = np.random.default_rng(batch_size).uniform(0, 255, (batch_size, 45, 61, 3)).astype("float32")
    logits, features = keras_outputs(model, pixels, meta)
    served = {k: v.numpy() for k, v in loaded.signatures["serving_default"](images=tf.constant(pixels)).items()}
    assert set(served) == {"logits", "probabilities", "classes", "scores", "labels"}
    np.testing.assert_allclose(served["logits"], logits, rtol=0, atol=1e-5)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    np.testing.assert_allclose(served["probabilities"], probabilities, rtol=0, atol=1e-5)
    top = np.argsort(-logits, axis=-1)[:, :3]
    np.testing.assert_array_equal(served["classes"], top)
    np.testing.assert_allclose(served["scores"], np.take_along_axis(probabilities, top, -1), atol=1e-5)
    assert served["labels"].tolist() == [[CIFAR10_NAMES[c].encode() for c in row] for row in top]
    feats = loaded.signatures["features"](images=tf.constant(pixels))["features"].numpy()
    np.testing.assert_allclose(feats, features, rtol=0, atol=1e-5)
    return loaded, pixels, served


@pytest.mark.parametrize("batch_size", [1, 7])
def test_vit_signatures_equal_keras(vit, vit_export, batch_size):
    check_signatures(vit, vit_export, batch_size)


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 7])
def test_distilled_deit_signatures_equal_keras(deit, deit_export, batch_size):
    check_signatures(deit, deit_export, batch_size)


def test_image_bytes_signature_equals_pixels(vit_export):
    loaded = tf.saved_model.load(vit_export)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((50, 40, 3), (32, 32, 3))]
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        from_bytes = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([buffer.getvalue()]))
        from_pixels = loaded.signatures["serving_default"](images=tf.constant(image[None].astype("float32")))
        np.testing.assert_allclose(from_bytes["logits"].numpy(), from_pixels["logits"].numpy(), atol=1e-5)


def test_layout_and_metadata(vit_export):
    base = os.path.dirname(vit_export)
    assert os.path.basename(vit_export) == "1" and export.list_versions(base) == [1]
    assert os.path.exists(os.path.join(vit_export, "saved_model.pb"))
    assert [e for e in os.listdir(base) if e.startswith(".")] == []  # no temporary folder left behind
    meta = export.load_metadata(vit_export)
    assert meta.input_size == (32, 32) and meta.crop_pct == 0.9 and list(meta.class_names) == CIFAR10_NAMES
    assert meta.mean == EXPORT_ARGS["mean"] and meta.top_k == 3


def test_warmup_requests_are_tf_serving_prediction_logs(vit_export):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(vit_export, "assets.extra", "tf_serving_warmup_requests")
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == [
        "serving_default",
        "serve_image_bytes",
    ]
    loaded = tf.saved_model.load(vit_export)
    for log in logs:  # each one runs on its signature as TF Serving replays it at load time
        request = log.predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        assert loaded.signatures[request.model_spec.signature_name](**inputs)["logits"].shape == (1, 10)


def test_verify_catches_a_different_model(vit, vit_export):
    report = export.verify_saved_model(vit, vit_export)
    assert report["max_abs_diff"]["logits"] <= 1e-5
    other = tiny_model(seed=2)
    with pytest.raises(ValueError, match=r"differs from the Keras model"):
        export.verify_saved_model(other, vit_export)


def test_existing_version_is_not_overwritten(vit, vit_export):
    with pytest.raises(ValueError, match=r"exists.*new version number.*overwrite=True"):
        export.saved_model(vit, vit_export, **EXPORT_ARGS)


def test_failed_write_leaves_no_version(vit, tmp_path, monkeypatch):
    # `keras_vit.export.saved_model` is the function; the module is reached through importlib
    saved_model_module = importlib.import_module("keras_vit.export.saved_model")

    def broken(model, meta):
        raise RuntimeError("disk full")

    monkeypatch.setattr(saved_model_module, "build_archive", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export.saved_model(vit, str(tmp_path / "m"), **EXPORT_ARGS)
    assert os.listdir(tmp_path / "m") == []


def test_version_paths(tmp_path):
    base = tmp_path / "m"
    from keras_vit.export.saved_model import resolve_export_path

    assert resolve_export_path(str(base)) == (str(base), 1)
    for entry in ("1", "3", ".tmp-4-abc", "notes", "10"):
        (base / entry).mkdir(parents=True)
    assert export.list_versions(str(base)) == [1, 3, 10]
    assert resolve_export_path(str(base)) == (str(base), 11)
    assert resolve_export_path(str(base / "7")) == (str(base), 7)
    with pytest.raises(ValueError, match="positive integers"):
        resolve_export_path(str(base / "0"))


def test_models_config_parses_with_tf_serving_proto(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = export.write_models_config(
        str(tmp_path / "models.config"), {"vit": str(tmp_path / "vit"), "deit": str(tmp_path / "deit")}
    )
    config = model_server_config_pb2.ModelServerConfig()
    with open(path) as f:
        text_format.Parse(f.read(), config)
    entries = [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]
    assert entries == [("vit", str(tmp_path / "vit"), "tensorflow"), ("deit", str(tmp_path / "deit"), "tensorflow")]
    assert export.read_models_config(path) == {"vit": str(tmp_path / "vit"), "deit": str(tmp_path / "deit")}
    docker = export.write_models_config(str(tmp_path / "docker.config"), {"vit": "x"}, base_path_prefix="/models")
    assert export.read_models_config(docker) == {"vit": "/models/vit"}
    with pytest.raises(ValueError, match="Model names"):
        export.write_models_config(str(tmp_path / "bad.config"), {"my model": "x"})
    (tmp_path / "broken.config").write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ValueError, match="not a valid TF Serving models.config"):
        export.read_models_config(str(tmp_path / "broken.config"))


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures(vit_export):
    result = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir", vit_export, "--all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for text in (
        "signature_def['serving_default']",
        "signature_def['serve_image_bytes']",
        "signature_def['features']",
        "inputs['images']",
        "inputs['image_bytes']",
        "outputs['labels']",
        "outputs['probabilities']",
        "shape: (-1, -1, -1, 3)",
        "Method name is: tensorflow/serving/predict",
    ):
        assert text in result.stdout
