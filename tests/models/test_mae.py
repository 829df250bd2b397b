"""keras_vit.MAE: outputs, masking, loss formula, serialization, errors, and the encoder's move into a ViT."""

import inspect
import re

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.layers.masking import patchify, unpatchify
from keras_vit.models.mae import MAE
from keras_vit.weights import save_weights
from keras_vit.weights.errors import CheckpointError

NAME = "mae_vit_digits_patch2_8"  # 8x8x1 images, patch 2: 16 patches, 4 kept


def _images(batch=4, seed=0):
    return np.random.default_rng(seed).random((batch, 8, 8, 1), dtype=np.float32)


def _noise(batch=4, seed=1):
    return np.random.default_rng(seed).random((batch, 16), dtype=np.float32)


def test_registered_variants_and_shapes():
    assert keras_vit.list_models("mae_*") == [
        "mae_vit_base_patch16",
        "mae_vit_digits_patch2_8",
        "mae_vit_huge_patch14",
        "mae_vit_large_patch16",
    ]
    spec = keras_vit.model_spec("mae_vit_base_patch16")
    assert spec.family == "mae" and spec.input_size == (224, 224)
    mae = keras_vit.create_model(NAME)
    out = mae(_images())
    assert tuple(out["pred"].shape) == (4, 16, 4) and tuple(out["mask"].shape) == (4, 16)
    assert out["loss"].shape == () and float(out["loss"]) > 0
    np.testing.assert_array_equal(out["mask"].numpy().sum(axis=1), [12] * 4)  # int(16 * 0.25) = 4 kept


def test_the_lowest_noise_values_are_kept():
    mae = keras_vit.create_model(NAME)
    noise = np.tile(np.arange(16, dtype=np.float32), (2, 1))
    noise[1] = noise[1][::-1]
    mask = mae(_images(2), noise=noise)["mask"].numpy()
    np.testing.assert_array_equal(mask[0], [0] * 4 + [1] * 12)
    np.testing.assert_array_equal(mask[1], [1] * 12 + [0] * 4)


def test_loss_is_mse_on_removed_patches_with_optional_pixel_norm():
    images, noise = _images(), _noise()
    for norm_pix in (False, True):
        mae = keras_vit.create_model(NAME, norm_pix_loss=norm_pix)
        out = mae(images, noise=noise)
        target = patchify(images, 2).numpy()
        if norm_pix:  # the paper's code: unbiased variance, eps 1e-6
            target = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
        per_patch = ((out["pred"].numpy() - target) ** 2).mean(-1)
        mask = out["mask"].numpy()
        np.testing.assert_allclose(float(out["loss"]), (per_patch * mask).sum() / mask.sum(), rtol=1e-5)


def test_patchify_layout_and_inverse():
    images = np.random.default_rng(0).random((2, 8, 12, 3), dtype=np.float32)
    patches = patchify(images, (4, 4)).numpy()
    np.testing.assert_array_equal(
        patches[1, 4], images[1, 4:8, 4:8, :].reshape(-1)
    )  # grid 2x3, row-major; channels last
    np.testing.assert_array_equal(unpatchify(patches, 4, (8, 12), 3), images)


def test_keras_round_trip_in_safe_mode(tmp_path):
    mae = keras_vit.create_model(NAME, depth=2, mask_ratio=0.5)
    path = str(tmp_path / "mae.keras")
    mae.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, MAE) and loaded.mask_ratio == 0.5 and loaded.config.depth == 2
    a, b = mae(_images(), noise=_noise()), loaded(_images(), noise=_noise())
    np.testing.assert_allclose(a["pred"], b["pred"], atol=1e-6)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in loaded.layers)


def test_config_matches_constructor():
    config = keras_vit.create_model(NAME).get_config()
    parameters = set(inspect.signature(MAE.__init__).parameters) - {"self", "weights", "encoder_kwargs", "dtype"}
    assert parameters <= set(config)


def test_fit_lowers_the_loss_and_trains_every_trainable_weight():
    keras.utils.set_random_seed(0)
    mae = keras_vit.create_model(NAME)
    before = [v.numpy().copy() for v in mae.trainable_variables]
    fixed = mae.get_layer("pos_embed").embeddings.numpy().copy()
    mae.compile(optimizer=keras.optimizers.AdamW(2e-3))
    data = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    history = mae.fit(data, epochs=4, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < history[0]
    assert all(np.any(a != v.numpy()) for a, v in zip(before, mae.trainable_variables))
    np.testing.assert_array_equal(mae.get_layer("pos_embed").embeddings.numpy(), fixed)  # the sin-cos table stays


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mask_ratio=0.0), "mask_ratio=0.0"),
        (dict(mask_ratio=1.0), "mask_ratio=1.0"),
        (dict(mask_ratio=-0.2), "mask_ratio=-0.2"),
        (dict(mask_ratio="0.75"), "mask_ratio='0.75'"),
        (dict(mask_ratio=True), "mask_ratio=True"),
        (dict(mask_ratio=0.97), "16 patches, mask_ratio=0.97 leaves the encoder no patch"),
        (dict(patch_size=3), "image_size=(8, 8), patch_size=(3, 3)"),
        (dict(decoder_heads=0), "decoder_heads=0"),
        (dict(image_size=9), "image_size=(9, 9)"),
        (dict(decoder_dim=36, decoder_heads=8), "decoder_dim=36, decoder_heads=8"),
        (dict(decoder_dim=30, decoder_heads=3), "dim=30"),
        (dict(distillation_token=True), "distillation_token=True"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        keras_vit.create_model(NAME, **kwargs)


def test_a_vit_checkpoint_is_not_an_mae_checkpoint(tmp_path):
    vit_file = save_weights(keras_vit.create_model("vit_digits_patch2_8"), str(tmp_path / "vit.safetensors"))
    with pytest.raises(CheckpointError, match=r"is not an MAE checkpoint"):
        keras_vit.MAE(NAME, weights=vit_file)
    (tmp_path / "config.json").write_text('{"model_type": "vit", "hidden_size": 64}')
    with pytest.raises(CheckpointError, match=r"model_type='vit'"):
        keras_vit.MAE(NAME, weights=vit_file)


def test_a_saved_vit_is_not_an_mae_checkpoint_and_a_saved_mae_loads(tmp_path):
    keras_vit.create_model("vit_digits_patch2_8").save(str(tmp_path / "vit.keras"))
    with pytest.raises(CheckpointError, match=r"vit.keras' is not an MAE checkpoint: the .keras archive holds no"):
        keras_vit.MAE(NAME, weights=str(tmp_path / "vit.keras"))
    source = keras_vit.create_model(NAME, seed=1)
    source.save(str(tmp_path / "mae.keras"))
    loaded = keras_vit.MAE(NAME, weights=str(tmp_path / "mae.keras"))
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_encoder_moves_into_vit_from_a_keras_file(tmp_path):
    mae = keras_vit.create_model(NAME)
    for variable in mae.trainable_variables:  # away from the zero/one initialisation
        variable.assign(variable.numpy() + np.random.default_rng(0).normal(0, 0.1, variable.shape))
    path = str(tmp_path / "mae.keras")
    mae.save(path)
    vit = keras_vit.ViT("vit_digits_patch2_8", num_classes=0, weights=path)
    for name in ("patch_embed", "prefix_tokens", "pos_embed", "block_0", "block_3", "norm"):
        for a, b in zip(vit.get_layer(name).weights, mae.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.warns(UserWarning, match="fc_norm starts fresh"):
        gap = keras_vit.ViT("vit_digits_patch2_8", pooling="gap", num_classes=10, weights=path)
    np.testing.assert_array_equal(gap.get_layer("block_2").weights[0].numpy(), mae.get_layer("block_2").weights[0])
    np.testing.assert_array_equal(gap.get_layer("fc_norm").weights[0].numpy(), np.ones(64))


def test_catalogued_mae_encoders_resolve_offline(tmp_path, monkeypatch):
    """The paper's encoders are catalogued by their timm tags; a cached file (written here) loads without network."""
    import dataclasses

    from keras_vit.weights import catalog, mae_hf
    from keras_vit.weights.safetensors_io import write_safetensors

    for model in ("vit_base_patch16_224", "vit_large_patch16_224", "vit_huge_patch14_224"):
        entry = catalog.CHECKPOINTS[f"{model}.mae"]
        assert entry.model == model and entry.num_classes == 0 and entry.license == "CC-BY-NC-4.0"
        assert entry.url == f"https://huggingface.co/timm/{model}.mae/resolve/main/model.safetensors"
    mae = keras_vit.create_model(NAME)
    encoder = {k: v for k, v in mae_hf.mae_state_dict(mae).items() if not k.startswith(("decoder_", "mask_token"))}
    entry = dataclasses.replace(catalog.CHECKPOINTS["vit_base_patch16_224.mae"], model="vit_digits_patch2_8")
    monkeypatch.setitem(catalog.CHECKPOINTS, entry.name, entry)
    monkeypatch.setenv("KERAS_VIT_CACHE", str(tmp_path))
    write_safetensors(str(tmp_path / "keras_vit" / entry.file_name), encoder, {"format": "pt"})
    vit = keras_vit.ViT("vit_digits_patch2_8", num_classes=0, weights=entry.name)
    np.testing.assert_array_equal(vit.get_layer("block_1").weights[0].numpy(), mae.get_layer("block_1").weights[0])


def test_plot_mae_reconstruction_writes_the_panels(tmp_path):
    from keras_vit import visualize

    mae = keras_vit.create_model(NAME, norm_pix_loss=True)
    images, noise = _images(2), _noise(2)
    drawn = visualize.plot_mae_reconstruction(mae, images, tmp_path / "mae.png", noise=noise)
    assert (tmp_path / "mae.png").stat().st_size > 0 and not list(tmp_path.glob(".tmp-*"))
    arrays = visualize.mae_reconstruction(mae, images, noise)
    kept = arrays["mask"] == 0
    np.testing.assert_array_equal(arrays["pasted"][kept], images[kept])  # visible pixels are the original's
    assert drawn["original"].shape == (2, 8, 8, 3) and drawn["mask"].sum() == 2 * 12 * 4
    with pytest.raises(ValueError, match=r"path='mae.jpg'"):
        visualize.plot_mae_reconstruction(mae, images, "mae.jpg")


def test_docs_code_blocks_run(tmp_path, monkeypatch):
    """Every Python block of docs/pretraining-mae.md runs as written, offline, in a fresh folder."""
    import pathlib

    import transformers  # noqa: F401  (a block uses it; the import lets tests/conftest.py load torch before TF)

    page = pathlib.Path(__file__).resolve().parents[2] / "docs" / "pretraining-mae.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "__docs__"})
    assert (tmp_path / "mae_reconstruction.png").is_file() and (tmp_path / "hf_mae" / "config.json").is_file()
