"""Training logs written by keras.callbacks.CSVLogger, and picture preprocessing."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_sample_image

from keras_vit import visualize


@pytest.fixture(scope="module")
def csv_log(tmp_path_factory):
    """A real CSVLogger file from fitting a tiny classifier for 3 epochs."""
    path = tmp_path_factory.mktemp("log") / "log.csv"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 2, 64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(
        x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[keras.callbacks.CSVLogger(str(path))]
    )
    return path, history.history


def test_read_training_log_matches_history(csv_log):
    path, history = csv_log
    columns = visualize.read_training_log(path)
    np.testing.assert_array_equal(columns["epoch"], [0, 1, 2])
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(columns[name], history[name], rtol=1e-6)


def test_csvlogger_without_validation_writes_na_which_reads_as_nan(tmp_path):
    path = tmp_path / "log.csv"
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.ones((8, 2)), np.ones(8), epochs=2, verbose=0, callbacks=[keras.callbacks.CSVLogger(str(path))])
    assert "NA" in path.read_text()  # Keras adds val_ columns it cannot fill
    columns = visualize.read_training_log(path)
    assert np.all(np.isnan(columns["val_loss"])) and np.all(np.isfinite(columns["loss"]))
    assert visualize.curves.metric_pairs(columns) == [("loss", "loss", None)]


def test_bad_training_logs_raise(tmp_path):
    with pytest.raises(ValueError, match=r"not found"):
        visualize.read_training_log(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("step,loss\n0,1.0\n")
    with pytest.raises(ValueError, match=r"'epoch' column"):
        visualize.read_training_log(tmp_path / "bad.csv")
    (tmp_path / "text.csv").write_text("epoch,loss\n0,abc\n")
    with pytest.raises(ValueError, match=r"Non-numeric value 'abc' in column 'loss', line 2"):
        visualize.read_training_log(tmp_path / "text.csv")


def test_prepare_images_crops_keeps_aspect_and_normalises():
    china = load_sample_image("china.jpg")  # 427 x 640
    inputs, display = visualize.prepare_images([china], (32, 64), 3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    assert inputs.shape == (1, 32, 64, 3) and display.shape == (1, 32, 64, 3) and display.dtype == np.uint8
    np.testing.assert_allclose(inputs, (display / 255.0 - [0.5, 0.4, 0.3]) / 0.2, atol=1e-5)
    grey, _ = visualize.prepare_images([china], (16, 16), 1, mean=(0.0,), std=(1.0,))
    assert grey.shape == (1, 16, 16, 1) and grey.min() >= 0.0 and grey.max() <= 1.0
    with pytest.raises(ValueError, match=r"uint8 \(height, width, 3\)"):
        visualize.prepare_images([china.astype("float32")], (16, 16))
    with pytest.raises(ValueError, match=r"std > 0"):
        visualize.prepare_images([china], (16, 16), std=(0.0,))
