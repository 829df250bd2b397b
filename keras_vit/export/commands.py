"""What `keras-vit export` and `keras-vit serve` do, as plain functions (the flags live in `cli.py`)."""

from __future__ import annotations

import os
from collections.abc import Sequence


def parse_floats(values: Sequence[str] | None, flag: str) -> tuple[float, ...] | None:
    """Comma-separated flag values as floats, or a ValueError naming the flag."""
    if values is None:
        return None
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise ValueError(f"--{flag} takes comma-separated numbers. Received: --{flag}={','.join(values)}") from None


def load_model(model_name: str | None, keras_file: str | None, num_classes: int | None = None):
    """A model from a `.keras` file, or built by registry name."""
    import keras

    import keras_vit

    if keras_file:
        if not os.path.exists(keras_file):
            raise ValueError(f"No such file. Received: --keras_file={keras_file}")
        return keras.saving.load_model(keras_file)
    if not model_name:
        raise ValueError("Give --model (a registered name, see `keras-vit list`) or --keras_file.")
    overrides = {} if num_classes is None else {"num_classes": num_classes}
    return keras_vit.create_model(model_name, **overrides)


def export_command(
    *,
    model_name: str | None = None,
    keras_file: str | None = None,
    num_classes: int | None = None,
    output_dir: str = "saved_models",
    name: str | None = None,
    version: int = 0,
    formats: Sequence[str] = ("saved_model",),
    class_names_file: str | None = None,
    top_k: int = 5,
    mean: Sequence[str] | None = None,
    std: Sequence[str] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    verify: bool = False,
    config_base_path_prefix: str | None = None,
) -> dict:
    """Exports one model in the asked formats; returns a report of paths (and parity with --verify)."""
    import numpy as np

    from keras_vit import export

    formats = set(formats)
    unknown = formats - {"saved_model", "litert", "onnx"}
    if unknown or not formats:
        raise ValueError(f"--formats takes saved_model, litert, onnx. Received: --formats={','.join(sorted(formats))}")
    class_names = None
    if class_names_file:
        with open(class_names_file) as f:
            class_names = [line.strip() for line in f if line.strip()]
    model = load_model(model_name, keras_file, num_classes)
    name = name or model_name or model.name
    options = dict(
        mean=parse_floats(mean, "mean"),
        std=parse_floats(std, "std"),
        crop_pct=crop_pct,
        interpolation=interpolation,
        class_names=class_names,
        top_k=top_k,
    )
    meta = export.metadata_for_model(model, name=name, **options)
    base = os.path.join(output_dir, name)
    report: dict = {"name": name}
    if "saved_model" in formats:
        target = os.path.join(base, str(version)) if version else base
        report["saved_model"] = export.saved_model(model, target, verify=verify, **options)
        models = {
            entry: os.path.join(output_dir, entry)
            for entry in sorted(os.listdir(output_dir))
            if export.list_versions(os.path.join(output_dir, entry))
        }
        report["models_config"] = export.write_models_config(
            os.path.join(output_dir, "models.config"), models, base_path_prefix=config_base_path_prefix
        )
    sample = expected = None
    if verify and formats & {"litert", "onnx"}:
        sample = np.random.default_rng(0).normal(size=(2, *meta.input_size, meta.num_channels)).astype("float32")
        expected = np.asarray(model(sample, training=False))
    for fmt, suffix in (("litert", ".tflite"), ("onnx", ".onnx")):
        if fmt not in formats:
            continue
        path = os.path.join(base, f"{name}{suffix}")
        if fmt == "onnx":
            report[fmt] = export.onnx(model, path, meta=meta)
        else:
            report[fmt] = export.litert(model, path)
        if sample is not None:
            runner = export.run_onnx if fmt == "onnx" else export.run_litert
            diff = float(np.abs(runner(path, sample) - expected).max())
            if not diff <= 1e-4:
                raise ValueError(f"{fmt} export differs from the Keras model: max abs diff {diff} > 1e-4.")
            report[f"{fmt}_max_abs_diff"] = diff
    return report


def served_models(model_name: str | None, model_base_path: str | None, model_config_file: str | None) -> dict:
    """name -> base path from tensorflow_model_server-style flags."""
    from keras_vit import export

    if model_config_file:
        if model_base_path:
            raise ValueError("Give either --model_config_file or --model_base_path, not both.")
        return export.read_models_config(model_config_file)
    if model_base_path:
        if not os.path.isdir(model_base_path):
            raise ValueError(f"No such folder. Received: --model_base_path={model_base_path}")
        return {model_name or os.path.basename(os.path.normpath(model_base_path)): model_base_path}
    raise ValueError("Give --model_base_path (with --model_name) or --model_config_file.")
