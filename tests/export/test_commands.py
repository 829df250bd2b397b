"""Argument checks of `keras-vit export` / `keras-vit serve` (the flag-free functions behind them)."""

import pytest

from keras_vit.export.commands import export_command, parse_floats, served_models


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model_name="vit_digits_patch2_8", formats=["pb"]), r"--formats takes saved_model, litert, onnx.*pb"),
        (dict(formats=[]), r"--formats takes"),
        (dict(), r"Give --model \(a registered name"),
        (dict(keras_file="missing.keras"), r"No such file. Received: --keras_file=missing.keras"),
        (dict(model_name="vit_nope"), r"Unknown model name 'vit_nope'"),
    ],
)
def test_export_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_command(output_dir=str(tmp_path), **kwargs)


def test_float_lists():
    assert parse_floats(["0.5", "0.25"], "mean") == (0.5, 0.25)
    assert parse_floats(None, "mean") is None
    with pytest.raises(ValueError, match=r"--std takes comma-separated numbers. Received: --std=a,1"):
        parse_floats(["a", "1"], "std")


def test_served_models(tmp_path):
    (tmp_path / "vit").mkdir()
    assert served_models(None, str(tmp_path / "vit"), None) == {"vit": str(tmp_path / "vit")}
    assert served_models("prod", str(tmp_path / "vit"), None) == {"prod": str(tmp_path / "vit")}
    with pytest.raises(ValueError, match="No such folder"):
        served_models(None, str(tmp_path / "missing"), None)
    with pytest.raises(ValueError, match="not both"):
        served_models(None, str(tmp_path / "vit"), "models.config")
    with pytest.raises(ValueError, match="Give --model_base_path"):
        served_models(None, None, None)
