"""The checkpoint catalogue: entries agree with the model zoo, and downloads go through keras.utils.get_file.

Nothing downloads: a catalogue entry is pointed at a local `file://` URL.
"""

import dataclasses
import os

import numpy as np
import pytest

import keras_vit
from keras_vit.models.timm_vit_variants import TIMM_VIT_VARIANTS
from keras_vit.models.vit import ViTConfig, missing_layers
from keras_vit.weights import catalog, checkpoint_info, list_checkpoints, save_weights
from keras_vit.weights.timm_vit_pretrained import TIMM_VIT_PRETRAINED
from tests.weights.conftest import TINY

HOSTS = ("https://storage.googleapis.com/vit_models/", "https://huggingface.co/timm/", "https://huggingface.co/google/")


TIMM_TAGS = set(TIMM_VIT_PRETRAINED) - {entry.name for entry in catalog._ENTRIES}
# timm's tags whose model waits for layers keras_vit.layers does not have yet (models.vit.missing_layers).
WAITING = sorted(n for n in TIMM_TAGS if missing_layers(ViTConfig(**TIMM_VIT_VARIANTS[n.split(".")[0]]["arch"])))


def test_catalogue_holds_timm_tags_of_the_vit_family():
    assert len(TIMM_TAGS) > 300 and "vit_base_patch16_siglip_224.webli" in TIMM_TAGS
    assert "vit_small_patch14_dinov2.lvd142m" in TIMM_TAGS
    for name in WAITING:
        assert checkpoint_info(name).model not in keras_vit.list_models()


@pytest.mark.parametrize("name", sorted(set(list_checkpoints()) - set(WAITING)))
def test_entry_is_consistent_with_the_zoo(name):
    entry = checkpoint_info(name)
    spec = keras_vit.model_spec(entry.model)
    assert entry.url.startswith(HOSTS) and entry.url.endswith("." + ("npz" if entry.format == "npz" else "safetensors"))
    assert entry.file_name.endswith(entry.format if entry.format == "npz" else ".safetensors")
    if name in TIMM_TAGS:  # the license timm's pretrained_cfg gives
        assert entry.license == TIMM_VIT_PRETRAINED[name]["license"] and entry.source
    else:
        assert entry.license in ("Apache-2.0", "CC-BY-NC-4.0") and entry.source  # CC-BY-NC-4.0: the MAE encoders
    assert tuple(entry.input_size) == tuple(spec.input_size)
    assert len(entry.mean) == len(entry.std) == 3
    assert entry.sha256 is None  # publishers list no digests; none are invented
    arch = dict(spec.arch, **entry.arch)
    assert arch.get("num_classes", spec.num_classes) == entry.num_classes


def test_unknown_name_lists_the_catalogue():
    with pytest.raises(ValueError, match=r"Unknown checkpoint 'vit_nope'. See keras_vit.weights.list_checkpoints"):
        checkpoint_info("vit_nope")
    with pytest.raises(ValueError, match=r"Did you mean: vit_base_patch16_siglip_224.webli"):
        checkpoint_info("vit_base_patch16_siglip_224.webly")


@pytest.fixture
def local_entry(tiny, tmp_path, monkeypatch):
    """A catalogue entry whose URL is a local file holding a tiny model's weights."""
    source = tiny(seed=3)
    served = save_weights(source, str(tmp_path / "served.safetensors"))
    entry = dataclasses.replace(
        checkpoint_info("deit_tiny_patch16_224.fb_in1k"),
        name="tiny_test.local",
        file_name="tiny_test.local.safetensors",
        url="file://" + served,
    )
    monkeypatch.setitem(catalog.CHECKPOINTS, entry.name, entry)
    monkeypatch.setenv("KERAS_VIT_CACHE", str(tmp_path / "keras_cache"))
    return entry, source, served


def test_download_uses_keras_cache_once(local_entry, tmp_path):
    entry, _, served = local_entry
    path = catalog.download_checkpoint(entry.name, cache_dir=str(tmp_path / "cache"))
    assert path == str(tmp_path / "cache" / "keras_vit" / entry.file_name)
    with open(path, "rb") as f, open(served, "rb") as g:
        assert f.read() == g.read()
    os.remove(served)  # a second call must not need the source any more
    assert catalog.download_checkpoint(entry.name, cache_dir=str(tmp_path / "cache")) == path


def test_weights_argument_accepts_a_catalogued_name(local_entry, batch):
    entry, source, _ = local_entry
    model = keras_vit.ViT(**TINY, weights=entry.name)
    np.testing.assert_array_equal(model(batch), source(batch))
