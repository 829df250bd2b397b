"""Every plot writes a non-empty PNG of the documented pixel size, headless, atomically."""

import math
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from keras_vit import visualize


def assert_png(path, size):
    assert os.path.getsize(path) > 1000
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.size == tuple(size)
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp-")]
    assert not leftovers


@pytest.fixture(scope="module")
def cached(deit_registers, images_16x24):
    return visualize.run_intermediates(deit_registers, images_16x24)


def test_rollout_plot(deit_registers, images_16x24, cached, tmp_path):
    photos = np.random.default_rng(0).integers(0, 256, (2, 80, 120, 3), dtype=np.uint8)
    result = visualize.plot_attention_rollout(
        deit_registers,
        images_16x24,
        tmp_path / "rollout.png",
        display_images=photos,
        token="dist",
        intermediates=cached,
    )
    assert_png(result["path"], (3 * 300, 2 * 200))  # panels 200 px high; 80x120 pictures -> 300 px wide
    assert result["size"] == (900, 400)
    assert result["heatmap"].shape == (2, 80, 120) and result["overlay"].shape == (2, 80, 120, 3)
    np.testing.assert_allclose(result["rollout"], visualize.attention_rollout(deit_registers, images_16x24, "dist"))


def test_heads_plot(deit_registers, images_16x24, cached, tmp_path):
    result = visualize.plot_attention_heads(
        deit_registers,
        images_16x24,
        tmp_path / "heads.png",
        layer=0,
        index=1,
        columns=2,
        panel_px=100,
        intermediates=cached,
    )
    # 16x24 inputs are drawn enlarged 8x (128x192): panels 100 high, 150 wide; 3 panels in 2 columns.
    assert_png(result["path"], (2 * 150, 2 * 100))
    np.testing.assert_array_equal(result["maps"], visualize.attention_maps(deit_registers, images_16x24, 0)[1])
    with pytest.raises(ValueError, match=r"`index` must be an int in \[0, 1\]"):
        visualize.plot_attention_heads(deit_registers, images_16x24, tmp_path / "x.png", index=2, intermediates=cached)


def test_distance_similarity_and_activation_plots(deit_registers, images_16x24, cached, tmp_path):
    distance = visualize.plot_mean_attention_distance(
        deit_registers, images_16x24, tmp_path / "d.png", width_px=500, height_px=300, intermediates=cached
    )
    assert_png(distance["path"], (500, 300))
    assert distance["distance"].shape == (2, 2)
    similarity = visualize.plot_position_embedding_similarity(deit_registers, tmp_path / "s.png")
    assert_png(similarity["path"], (640, 560))
    assert similarity["mosaic"].shape == (4 * 5 - 1, 6 * 7 - 1)
    stats = visualize.plot_activation_statistics(deit_registers, images_16x24, tmp_path / "a.png", intermediates=cached)
    assert_png(stats["path"], (960, 720))
    assert stats["patch_norms"].shape == (2, 2, 4, 6)


def test_training_curves_plot(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(
        "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
        "0,0.5,0.001,1.2,0.55,1.1\n1,0.7,0.001,0.8,0.68,0.9\n2,0.8,0.0005,0.6,0.75,0.7\n"
    )
    result = visualize.plot_training_curves(log, tmp_path / "curves.png", columns=2, panel_px=(300, 200))
    assert_png(result["path"], (2 * 300, math.ceil(3 / 2) * 200))  # loss, accuracy, learning_rate
    np.testing.assert_allclose(result["columns"]["val_loss"], [1.1, 0.9, 0.7])


def test_plot_paths_must_be_png(deit_registers, tmp_path):
    with pytest.raises(ValueError, match=r"ending in '.png'.*plot.jpg"):
        visualize.plot_position_embedding_similarity(deit_registers, tmp_path / "plot.jpg")


def test_show_displays_the_png_inline(deit_registers, tmp_path):
    result = visualize.plot_position_embedding_similarity(deit_registers, tmp_path / "s.png")
    image = visualize.show(result)
    assert image.data == pathlib.Path(result["path"]).read_bytes()
    with pytest.raises(ValueError, match=r"No such plot file"):
        visualize.show(tmp_path / "missing.png")


def test_written_files_get_umask_permissions_not_mkstemps_0600(deit_registers, tmp_path):
    umask = os.umask(0o022)
    try:
        path = visualize.plot_position_embedding_similarity(deit_registers, tmp_path / "p.png")["path"]
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o644
