import csv
import os

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.training import AtomicCheckpoint, build_callbacks, freeze_backbone, transfer_weights
from keras_vit.training.io import write_json
from keras_vit.training.reporting import plot_learning_curves


def _tiny(num_classes=3, **kw):
    arch = dict(image_size=8, patch_size=4, num_channels=1, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32)
    return keras_vit.ViT(**dict(arch, num_classes=num_classes, **kw))


def test_checkpoint_keeps_only_improvements_and_leaves_no_temp_files(tmp_path):
    model = _tiny()
    path = str(tmp_path / "best.keras")
    callback = AtomicCheckpoint(path, monitor="val_accuracy")
    callback.set_model(model)
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    first = os.path.getmtime(path)
    os.utime(path, (first - 100, first - 100))
    callback.on_epoch_end(1, {"val_accuracy": 0.4})  # worse: not written
    assert os.path.getmtime(path) == first - 100
    callback.on_epoch_end(2, {"val_accuracy": 0.6})
    assert os.path.getmtime(path) > first - 100
    assert sorted(os.listdir(tmp_path)) == ["best.keras"]
    restored = keras.saving.load_model(path)
    assert restored.config == model.config
    with pytest.raises(ValueError, match=r"end in '\.keras'"):
        AtomicCheckpoint(str(tmp_path / "x.h5"))


def test_fit_with_the_run_callbacks_writes_logs_and_checkpoints(tmp_path):
    model = _tiny()
    model.compile(
        keras.optimizers.AdamW(1e-3, use_ema=True),
        keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(16) % 3]
    callbacks = build_callbacks(str(tmp_path), has_validation=True, early_stopping_patience=5, ema=True)
    kinds = [type(c).__name__ for c in callbacks]
    assert kinds[0] == "StopOnNonFiniteLoss" and kinds[-1] == "TrainingBackup"  # guard first, backup last
    assert {"SwapEMAWeights", "HistoryLog", "TensorBoard", "ResumableEarlyStopping"} <= set(kinds)
    model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=8, callbacks=callbacks, verbose=0)
    rows = list(csv.DictReader((tmp_path / "history.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["0", "1"] and "val_accuracy" in rows[0]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["best.keras", "last.keras"]
    assert os.listdir(tmp_path / "tensorboard")
    # the two newest backups, from the epoch ends (the runner removes them once the results are written)
    assert sorted(os.listdir(tmp_path / "backup")) == ["step-000001-000000000", "step-000002-000000000"]


def test_early_stopping_needs_validation(tmp_path):
    with pytest.raises(ValueError, match="Early stopping needs validation data"):
        build_callbacks(str(tmp_path), has_validation=False, early_stopping_patience=3)


def test_reports_are_written_atomically(tmp_path):
    write_json(str(tmp_path / "m.json"), {"accuracy": np.float32(0.5), "size": (8, 8)})
    assert (tmp_path / "m.json").read_text().count("0.5") == 1
    plot_learning_curves(
        {"loss": [2.0, 1.0], "val_loss": [2.1, 1.2], "accuracy": [0.3, 0.6]}, str(tmp_path / "curve.png"), title="t"
    )
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["curve.png", "m.json"]
    with pytest.raises(ValueError, match="neither 'loss' nor 'accuracy'"):
        plot_learning_curves({"lr": [1.0]}, str(tmp_path / "x.png"))


def test_transfer_weights_and_linear_probe_freezing():
    source = _tiny(num_classes=5)
    target = _tiny(num_classes=3)
    untouched = transfer_weights(source, target)
    assert untouched == ["head"]  # a new head for the new classes
    np.testing.assert_array_equal(
        target.get_layer("block_0").get_weights()[0], source.get_layer("block_0").get_weights()[0]
    )
    freeze_backbone(target)
    assert [v.path for v in target.trainable_variables] == ["head/kernel", "head/bias"]
    bigger = _tiny(num_classes=5, image_size=16)
    assert transfer_weights(source, bigger) == []  # position embeddings resampled to the new grid
    with pytest.raises(ValueError, match="needs a head"):
        freeze_backbone(_tiny(num_classes=0))
    with pytest.raises(ValueError, match="another architecture"):
        transfer_weights(source, _tiny(num_classes=5, hidden_dim=24, num_heads=2, mlp_dim=48))
    with pytest.warns(UserWarning, match="block_1"):
        transfer_weights(source, _tiny(num_classes=5, depth=2))
