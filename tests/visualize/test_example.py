"""examples/visualize_attention.py uses the default recipe's model when one exists (slow: it trains two models).

Its plain --smoke run (digits trained in the example) is in tests/examples/test_examples.py.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import keras_vit

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "visualize_attention.py")
PICTURES = [
    "digits_rollout.png",
    "digits_distance.png",
    "digits_position_similarity.png",
    "digits_training_curves.png",
    "photos_rollout.png",
    "photos_heads.png",
    "photos_distance.png",
    "photos_position_similarity.png",
    "photos_activations.png",
]


def run_example(cwd, out):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [os.path.abspath(os.path.join(EXAMPLE, "..", "..")), os.environ.get("PYTHONPATH", "")]
        ),
    )
    done = subprocess.run(
        [sys.executable, os.path.abspath(EXAMPLE), "--smoke", "--out", str(out)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in PICTURES:
        path = os.path.join(out, name)
        assert 1000 < os.path.getsize(path) < 300 * 1024, name
        with Image.open(path) as image:
            assert image.format == "PNG"
    return done.stdout


@pytest.mark.slow
def test_example_uses_the_default_recipe_model_when_present(tmp_path):
    run = tmp_path / "runs" / "digits_vit-20261127-000000"  # the folder `keras-vit train` writes
    run.mkdir(parents=True)
    model = keras_vit.ViT("vit_digits_patch2_8")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    digits = load_digits()
    model.fit(
        (digits.images[:64, ..., None] / 16.0).astype("float32"),
        digits.target[:64],
        epochs=2,
        verbose=0,
        callbacks=[keras.callbacks.CSVLogger(str(run / "history.csv"))],
    )
    model.save(str(run / "model.keras"))
    stdout = run_example(tmp_path, tmp_path / "images")
    assert "(default recipe)" in stdout and "trained here for" not in stdout.split("photo model")[0]
    assert np.isfinite(float(stdout.split("digits test accuracy: ")[1].split()[0]))
