"""The in-graph preprocessing against timm's evaluation transform written with PIL."""

import io
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vit.export import ServingMetadata, decode_and_preprocess, preprocess
from tests.export.export_helpers import sample_image_bytes

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def pil_reference(image: Image.Image, meta: ServingMetadata) -> np.ndarray:
    """timm's eval transform: Resize(size / crop_pct) (shorter side when square), CenterCrop, Normalize."""
    height, width = meta.input_size
    w, h = image.size
    if height == width:
        short = math.floor(height / meta.crop_pct)
        new_h, new_w = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    else:
        new_h, new_w = math.floor(height / meta.crop_pct), math.floor(width / meta.crop_pct)
    resized = image.resize((new_w, new_h), PIL_FILTERS[meta.interpolation])
    top, left = int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))
    pixels = np.asarray(resized.crop((left, top, left + width, top + height)), np.float32) / 255.0
    return (pixels - np.array(meta.mean)) / np.array(meta.std)


@pytest.mark.parametrize("interpolation, max_px", [("bilinear", 1.0), ("bicubic", 4.0)])
@pytest.mark.parametrize("size, crop_pct", [((224, 224), 0.875), ((32, 32), 0.9), ((48, 80), 0.95), ((96, 96), 1.0)])
def test_matches_timm_eval_transform_on_a_photograph(size, crop_pct, interpolation, max_px):
    image = Image.open(io.BytesIO(sample_image_bytes())).convert("RGB")  # 640x427
    meta = ServingMetadata(input_size=size, crop_pct=crop_pct, interpolation=interpolation, **IMAGENET)
    ours = np.asarray(preprocess(np.asarray(image, np.float32)[None], meta))[0]
    reference = pil_reference(image, meta)
    assert ours.shape == reference.shape == (*size, 3)
    error = np.abs(ours - reference) * np.array(meta.std) * 255.0  # in 8-bit pixel steps
    # PIL rounds to uint8 (0.5 step) and its bicubic kernel differs slightly from TF's.
    assert error.max() <= max_px
    assert error.mean() <= 0.35


def test_identity_when_already_at_size():
    meta = ServingMetadata(input_size=(16, 24), crop_pct=1.0, interpolation="bicubic", **IMAGENET)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 16, 24, 3)).astype("float32")
    expected = (pixels / 255.0 - np.array(meta.mean, np.float32)) / np.array(meta.std, np.float32)
    np.testing.assert_allclose(np.asarray(preprocess(pixels, meta)), expected, rtol=0, atol=1e-5)


def test_decoding_lossless_png_equals_pixels_of_any_size():
    meta = ServingMetadata(input_size=(32, 32), crop_pct=0.9, **IMAGENET)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((40, 60, 3), (75, 33, 3))]
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    decoded = np.asarray(decode_and_preprocess(tf.constant(encoded), meta))
    for i, image in enumerate(images):
        direct = np.asarray(preprocess(image[None].astype("float32"), meta))[0]
        np.testing.assert_allclose(decoded[i], direct, atol=1e-5)


def test_grey_model_decodes_to_one_channel():
    meta = ServingMetadata(input_size=(8, 8), num_channels=1, mean=(0.3,), std=(0.4,), crop_pct=1.0)
    out = decode_and_preprocess(tf.constant([sample_image_bytes()]), meta)
    assert out.shape == (1, 8, 8, 1)


def test_jpeg_decodes_exactly_as_pil():
    jpeg = sample_image_bytes("china.jpg")
    meta = ServingMetadata(input_size=(427, 640), crop_pct=1.0, mean=(0.0,) * 3, std=(1.0 / 255,) * 3)
    decoded = np.asarray(decode_and_preprocess(tf.constant([jpeg]), meta))[0]  # identity resize, x/255*255
    np.testing.assert_allclose(decoded, np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32), atol=1e-3)
