"""`keras-vit visualize`: a saved model, image files in, PNG files out."""

import os

import keras
import numpy as np
import pytest
from absl import flags
from PIL import Image
from sklearn.datasets import load_sample_image

from keras_vit.visualize import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory, deit_registers):
    folder = tmp_path_factory.mktemp("cli")
    model_path = str(folder / "deit.keras")
    deit_registers.save(model_path)
    images = []
    for name in ("china.jpg", "flower.jpg"):
        path = str(folder / name.replace(".jpg", ".png"))
        Image.fromarray(load_sample_image(name)).save(path)
        images.append(path)
    return folder, model_path, images


def test_visualize_command_writes_and_prints_files(files, capsys):
    folder, model_path, images = files
    out = str(folder / "out")
    flags.FLAGS(
        [
            "keras-vit visualize",
            f"--model={model_path}",
            f"--image={images[0]}",
            f"--image={images[1]}",
            f"--out={out}",
            "--layer=0",
            "--mean=0.5",
            "--std=0.25",
        ]
    )
    try:
        cli.main(["visualize"])
    finally:
        flags.FLAGS.unparse_flags()
    printed = capsys.readouterr().out.split()
    names = sorted(os.path.basename(p) for p in printed)
    assert names == sorted(
        [
            "attention_rollout.png",
            "attention_heads_0_china.png",
            "attention_heads_1_flower.png",
            "mean_attention_distance.png",
            "position_embedding_similarity.png",
            "activation_statistics.png",
            "arrays.npz",
        ]
    )
    for path in printed:
        assert os.path.getsize(path) > 0
    arrays = np.load(os.path.join(out, "arrays.npz"))
    assert arrays["rollout"].shape == (2, 4, 6) and arrays["head_maps"].shape == (2, 2, 4, 6)
    assert arrays["position_similarity"].shape == (4, 6, 4, 6)


def test_visualize_at_another_image_size(files, deit_registers):
    folder, _, images = files
    written = cli.visualize(deit_registers, images[:1], str(folder / "resized"), image_size=(24, 32))
    arrays = np.load(written[-1])
    assert arrays["rollout"].shape == (1, 6, 8)  # position embeddings resampled from the 16x24 model, patch 4
    assert arrays["position_similarity"].shape == (6, 8, 6, 8)
    assert cli.parse_image_size(["24", "32"]) == (24, 32) and cli.parse_image_size(40) == (40, 40)
    with pytest.raises(ValueError, match=r"--image_size takes H,W"):
        cli.parse_image_size(["a", "b"])


def test_visualize_rejects_bad_models_and_layers(files, tmp_path):
    _, model_path, images = files
    with pytest.raises(ValueError, match=r"Model file not found"):
        cli.load_model(str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match=r"registered model name.*--model='not_a_model'"):
        cli.load_model("not_a_model")
    cnn = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match=r"no attention outputs"):
        cli.visualize(cnn, images, str(tmp_path))
    model = cli.load_model(model_path)
    with pytest.raises(ValueError, match=r"layer=5"):
        cli.visualize(model, images, str(tmp_path / "out"), layer=5)
    assert not os.path.exists(tmp_path / "out")
