"""The checkpoint catalogue: entries agree with the model zoo; downloads are atomic and checked on every use.

Nothing downloads from the network: a catalogue entry is pointed at a local `file://` URL.
"""

import dataclasses
import hashlib
import os
import urllib.request

import numpy as np
import pytest

import keras_vit
from keras_vit.models.timm_vit_variants import TIMM_VIT_VARIANTS
from keras_vit.models.vit import ViTConfig, missing_layers
from keras_vit.weights import CheckpointError, catalog, checkpoint_info, list_checkpoints, save_weights
from keras_vit.weights.checksum import fetch_verified, read_record
from keras_vit.weights.timm_vit_pretrained import TIMM_VIT_PRETRAINED
from tests.weights.conftest import TINY

# timm's license names of the EVA family's tags (EVA/EVA-02 MIT, PE/ROPE-ViT Apache, DINOv3 and Sapiens2 their own).
EVA_LICENSES = ("mit", "apache-2.0", "dinov3-license", "sapiens2-license", "fair-noncommercial-research-license")
HOSTS = ("https://storage.googleapis.com/vit_models/", "https://huggingface.co/timm/", "https://huggingface.co/google/")
HOSTS += ("https://huggingface.co/belfner/",)  # timm's pretrained_cfg hf_hub_id of the LingBot weights


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
        assert (
            entry.license in ("Apache-2.0", "CC-BY-NC-4.0") + EVA_LICENSES and entry.source
        )  # CC-BY-NC-4.0: the MAE encoders
    assert tuple(entry.input_size) == tuple(entry.arch.get("image_size", spec.input_size))
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


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_first_download_records_its_digest_beside_the_file(local_entry, tmp_path):
    entry, _, served = local_entry
    path = catalog.download_checkpoint(entry.name)
    assert path == str(tmp_path / "keras_cache" / "keras_vit" / entry.file_name)  # $KERAS_VIT_CACHE
    assert read_record(path) == sha256(served) == sha256(path)
    with open(path + ".sha256") as f:
        assert f.read() == f"{sha256(served)}  {entry.file_name}\n"  # the `sha256sum -c` format
    assert sorted(os.listdir(os.path.dirname(path))) == [entry.file_name, entry.file_name + ".sha256"]  # no temp


def test_a_damaged_cached_file_is_downloaded_again(local_entry):
    entry, _, served = local_entry
    path = catalog.download_checkpoint(entry.name)
    with open(path, "r+b") as f:  # one flipped byte, as a bad disk or an edit would leave it
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.warns(UserWarning, match=r"has SHA-256 [0-9a-f]{64}, not the expected " + sha256(served)):
        assert catalog.download_checkpoint(entry.name) == path
    assert sha256(path) == sha256(served)


def test_a_changed_origin_is_refused_and_the_cache_kept(local_entry):
    entry, _, served = local_entry
    path = catalog.download_checkpoint(entry.name)
    first = sha256(path)
    os.remove(path)  # the cached file is gone, its record stays
    with open(served, "ab") as f:
        f.write(b"the publisher changed the file")
    with pytest.raises(
        CheckpointError, match=rf"expected {first}, the download has {sha256(served)}.*delete .*\.sha256"
    ):
        catalog.download_checkpoint(entry.name)
    assert sorted(os.listdir(os.path.dirname(path))) == [entry.file_name + ".sha256"]  # nothing half-written
    os.remove(path + ".sha256")  # accepting the new file, as the message says
    assert sha256(catalog.download_checkpoint(entry.name)) == sha256(served)


def test_a_published_digest_is_checked_before_the_file_lands(local_entry, monkeypatch):
    entry, _, served = local_entry
    wrong = dataclasses.replace(entry, sha256="0" * 64)
    monkeypatch.setitem(catalog.CHECKPOINTS, entry.name, wrong)
    with pytest.raises(CheckpointError, match=rf"expected {'0' * 64}, the download has {sha256(served)}"):
        catalog.download_checkpoint(entry.name)
    right = dataclasses.replace(entry, sha256=sha256(served).upper())
    monkeypatch.setitem(catalog.CHECKPOINTS, entry.name, right)
    assert sha256(catalog.download_checkpoint(entry.name)) == sha256(served)


def test_an_interrupted_download_leaves_no_file(tmp_path, monkeypatch):
    served = tmp_path / "served.bin"
    served.write_bytes(os.urandom(3 << 20))  # three 1 MiB reads

    class Dropped:
        def __init__(self, response):
            self.response, self.reads = response, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.response.close()

        def read(self, size):
            self.reads += 1
            if self.reads == 2:
                raise ConnectionResetError("connection dropped")
            return self.response.read(size)

    opener = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda url: Dropped(opener(url)))
    target = tmp_path / "cache" / "file.bin"
    target.parent.mkdir()
    with pytest.raises(ConnectionResetError):
        fetch_verified("file://" + str(served), str(target))
    assert os.listdir(target.parent) == []  # neither a partial file nor a record
    monkeypatch.setattr(urllib.request, "urlopen", opener)
    assert sha256(fetch_verified("file://" + str(served), str(target))) == sha256(served)


def test_a_file_cached_before_records_existed_is_recorded_as_it_is(tmp_path):
    target = tmp_path / "old.bin"
    target.write_bytes(b"cached by an earlier version")
    assert fetch_verified("file:///nonexistent", str(target)) == str(target)  # not fetched again
    assert read_record(str(target)) == sha256(target)


def test_bad_digest_names_the_value(tmp_path):
    with pytest.raises(ValueError, match=r"64 hexadecimal digits. Received: sha256='abc'"):
        fetch_verified("file:///nonexistent", str(tmp_path / "x.bin"), sha256="abc")
