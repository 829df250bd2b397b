import numpy as np
import pytest

import keras_vit
from keras_vit.export import ServingMetadata, metadata_for_model


def test_registry_model_takes_its_spec():
    model = keras_vit.create_model("vit_digits_patch2_8")
    spec = keras_vit.model_spec("vit_digits_patch2_8")
    meta = metadata_for_model(model, top_k=3)
    assert meta.input_size == spec.input_size == (8, 8)
    assert meta.num_channels == 1
    assert (meta.mean, meta.std, meta.crop_pct) == (spec.mean, spec.std, spec.crop_pct)
    assert meta.interpolation == spec.interpolation
    assert meta.model_name == "vit_digits_patch2_8" and meta.num_classes == 10 and meta.effective_top_k == 3
    overridden = metadata_for_model(model, crop_pct=0.5, mean=(0.1,))
    assert overridden.crop_pct == 0.5 and overridden.mean == (0.1,) and overridden.std == spec.std


def test_model_outside_registry_needs_mean_and_std():
    model = keras_vit.ViT(image_size=16, patch_size=8, hidden_dim=16, depth=1, num_heads=2, mlp_dim=16, num_classes=3)
    with pytest.raises(ValueError, match=r"not built from the keras_vit registry.*Pass `mean` and `std`"):
        metadata_for_model(model)
    meta = metadata_for_model(model, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert meta.crop_pct == 1.0 and meta.input_size == (16, 16) and meta.num_classes == 3


def test_headless_model_has_no_classes():
    model = keras_vit.ViT(image_size=16, patch_size=8, hidden_dim=16, depth=1, num_heads=2, mlp_dim=16, num_classes=0)
    meta = metadata_for_model(model, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert meta.num_classes == 0 and meta.effective_top_k == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(crop_pct=0.0), r"crop_pct.*\(0, 1\].*Received: crop_pct=0.0"),
        (dict(crop_pct=1.5), r"Received: crop_pct=1.5"),
        (dict(interpolation="cubic"), r"interpolation.*Received: interpolation='cubic'"),
        (dict(std=(0.5, 0.0, 0.5)), r"std.*positive"),
        (dict(mean=(0.5, 0.5)), r"mean.*1 or num_channels=3"),
        (dict(top_k=0), r"top_k.*Received: top_k=0"),
        (dict(class_names=("a", "b")), r"every one of the model's 10 classes. Received 2"),
        (dict(pixel_scale=0), r"pixel_scale"),
        (dict(input_size=(0, 4)), r"input_size"),
    ],
)
def test_invalid_metadata_is_named(kwargs, message):
    args = dict(input_size=(32, 32), num_classes=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ServingMetadata(**args)


def test_json_round_trip_and_resize_size():
    meta = ServingMetadata(input_size=(224, 224), crop_pct=0.875, num_classes=2, class_names=("cat", "dog"))
    assert ServingMetadata.from_dict(__import__("json").loads(meta.to_json())) == meta
    assert meta.resize_size == 256  # timm: floor(224 / 0.875)
    assert ServingMetadata(input_size=(32, 48), crop_pct=0.9).resize_size == (35, 53)
    assert np.isclose(ServingMetadata(input_size=(8, 8)).crop_pct, 1.0)


def test_unknown_export_options_are_named():
    from keras_vit.export.metadata import check_options, metadata_for_model

    check_options({"mean": (0.5,), "top_k": 3}, metadata_for_model, "saved_model", exclude=("model", "name"))
    with pytest.raises(
        TypeError,
        match=r"saved_model\(\) got unexpected keyword argument\(s\) \['mena'\]. "
        r"Valid: \['mean', 'std', 'crop_pct', 'interpolation', 'pixel_scale', "
        r"'class_names', 'top_k'\]",
    ):
        check_options({"mena": (0.5,)}, metadata_for_model, "saved_model", exclude=("model", "name"))
