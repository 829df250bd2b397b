"""SavedModel export in TF Serving's layout: `<base>/<name>/<version>/saved_model.pb`.

A version is written to a hidden temporary folder beside its final place and
renamed into place in one step, so a server polling the base folder (TF
Serving, or `keras-vit serve`) sees either no version or a complete one.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from typing import Any

import keras
import numpy as np

from keras_vit.export.metadata import METADATA_FILE, ServingMetadata, check_options, metadata_for_model
from keras_vit.export.signatures import DEFAULT_SIGNATURE, FEATURES_SIGNATURE, build_archive
from keras_vit.export.warmup import write_warmup_requests

EXTRA_DIR = "assets.extra"  # TF Serving ignores it for loading; warm-up requests live here too
_VERSION = re.compile(r"^[0-9]+$")


def list_versions(base_path: str) -> list[int]:
    """Numbered version folders under `base_path` (TF Serving's rule: all-digit names), ascending."""
    if not os.path.isdir(base_path):
        return []
    return sorted(
        int(entry)
        for entry in os.listdir(base_path)
        if _VERSION.match(entry) and os.path.isdir(os.path.join(base_path, entry))
    )


def resolve_export_path(path: str) -> tuple[str, int]:
    """Splits `.../<name>/<version>` into (base path, version); a path without a version gets the next one."""
    path = os.path.abspath(os.fspath(path))
    last = os.path.basename(path)
    if _VERSION.match(last):
        version = int(last)
        if version <= 0:
            raise ValueError(f"TF Serving versions are positive integers. Received: version={version} in {path!r}")
        return os.path.dirname(path), version
    existing = list_versions(path)
    return path, (existing[-1] + 1 if existing else 1)


def saved_model(
    model: keras.Model,
    path: str,
    *,
    overwrite: bool = False,
    verify: bool = False,
    warmup: bool = True,
    **metadata_options: Any,
) -> str:
    """Exports `model` as a TF Serving SavedModel with preprocessing and top-k in the graph.

    Args:
        model: a keras_vit model (or any Keras image model with a static input size).
        path: `saved_models/<name>/<version>`; without a trailing version number the
            next free version under `path` is used.
        overwrite: replace an existing version folder. Defaults to False.
        verify: reload the written model and compare it with `model` (see `verify_saved_model`).
        warmup: write TF Serving warm-up requests (`assets.extra/tf_serving_warmup_requests`).
        **metadata_options: the preprocessing and output settings of
            `metadata_for_model`: `mean`, `std`, `crop_pct`, `interpolation`
            (overrides; `mean` and `std` required for models not built from the
            registry), `pixel_scale` (value of a white pixel in client inputs,
            255), `class_names` (one per class, the `labels` output) and `top_k`
            (classes in the `classes`/`scores`/`labels` outputs, 5).

    Returns:
        The absolute path of the version folder written.
    """
    check_options(metadata_options, metadata_for_model, "saved_model", exclude=("model", "name"))
    meta = metadata_for_model(model, **metadata_options)
    base, version = resolve_export_path(path)
    final = os.path.join(base, str(version))
    if os.path.exists(final) and not overwrite:
        raise ValueError(
            f"Version folder {final!r} exists. Export a new version number (servers pick the highest) "
            f"or pass overwrite=True."
        )
    os.makedirs(base, exist_ok=True)
    temp = os.path.join(base, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
    try:
        build_archive(model, meta).write_out(temp, verbose=False)
        extra = os.path.join(temp, EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, METADATA_FILE), "w") as f:
            f.write(meta.to_json())
        if warmup:
            write_warmup_requests(extra, meta)
        if verify:
            verify_saved_model(model, temp, meta)
        _move_into_place(temp, final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


def _move_into_place(temp: str, final: str) -> None:
    if not os.path.exists(final):
        os.rename(temp, final)  # atomic on one file system: the version appears complete or not at all
        return
    old = f"{os.path.dirname(final)}/.old-{os.path.basename(final)}-{uuid.uuid4().hex[:8]}"
    os.rename(final, old)
    os.rename(temp, final)
    shutil.rmtree(old, ignore_errors=True)


def load_metadata(version_path: str) -> ServingMetadata:
    """The `ServingMetadata` stored with an exported version."""
    import json

    file = os.path.join(version_path, EXTRA_DIR, METADATA_FILE)
    if not os.path.exists(file):
        raise ValueError(
            f"{version_path!r} has no {EXTRA_DIR}/{METADATA_FILE}; it was not written by keras_vit.export.saved_model."
        )
    with open(file) as f:
        return ServingMetadata.from_dict(json.load(f))


def verify_saved_model(
    model: keras.Model,
    path: str,
    meta: ServingMetadata | None = None,
    *,
    atol: float | None = None,
    batch_size: int = 3,
) -> dict[str, Any]:
    """Reloads a written SavedModel and checks its signatures against the Keras model.

    Feeds random pixels larger than the model's input (so the graph resizes and
    crops) and compares `serving_default` logits (or features) and `features`
    with the Keras model run on the same batch preprocessed eagerly.

    `atol=None` picks the tolerance from the model's compute dtype: 1e-5 in
    float32; under a mixed policy, where graph and eager runs may round one
    value to neighbouring bf16/fp16 numbers, four units of rounding of the
    largest output (`low_precision_atol`).

    Returns:
        {"max_abs_diff": {output: float}, "atol": {output: float}, "batch_size": int}.

    Raises:
        ValueError: when an output differs by more than `atol`.
    """
    import tensorflow as tf

    from keras_vit.export.preprocessing import preprocess

    meta = meta or load_metadata(path)
    height, width = meta.input_size
    shape = (batch_size, height + height // 2, width + width // 3, meta.num_channels)
    pixels = np.random.default_rng(0).uniform(0, meta.pixel_scale, shape).astype("float32")
    normalised = preprocess(tf.constant(pixels), meta)
    loaded = tf.saved_model.load(path)
    served = loaded.signatures[DEFAULT_SIGNATURE](images=tf.constant(pixels))
    key = "logits" if meta.num_classes else "features"
    pairs = {key: (served[key].numpy(), np.asarray(model(normalised, training=False), "float32"))}
    if FEATURES_SIGNATURE in loaded.signatures and hasattr(model, "feature_extractor"):
        features = loaded.signatures[FEATURES_SIGNATURE](images=tf.constant(pixels))["features"].numpy()
        pairs["features"] = (features, np.asarray(model.feature_extractor()(normalised), "float32"))
    diffs = {name: float(np.max(np.abs(got - want))) for name, (got, want) in pairs.items()}
    compute_dtype = lowest_compute_dtype(model)
    limits = {
        name: low_precision_atol(want, compute_dtype) if atol is None else atol for name, (_, want) in pairs.items()
    }
    bad = {name: (diffs[name], limits[name]) for name in diffs if not diffs[name] <= limits[name]}
    if bad:
        raise ValueError(
            f"Exported model at {path!r} differs from the Keras model: {{output: (max abs diff, atol)}} {bad}."
        )
    return {"max_abs_diff": diffs, "atol": limits, "batch_size": batch_size}


_UNIT_ROUNDOFF = {"bfloat16": 2.0**-7, "float16": 2.0**-10}


def lowest_compute_dtype(model: keras.Model) -> str:
    """The least precise compute dtype of `model` and its layers (a loaded mixed model keeps it per layer)."""
    dtypes = {model.dtype_policy.compute_dtype} | {layer.dtype_policy.compute_dtype for layer in model.layers}
    return max(dtypes, key=lambda dtype: _UNIT_ROUNDOFF.get(dtype, 0.0))


def low_precision_atol(reference: np.ndarray, compute_dtype: str) -> float:
    """1e-5 for float32 compute, else 4 bf16/fp16 rounding units; relative to `reference`'s largest magnitude above 1.

    Graph and eager kernels sum in different orders, so wide features (a MAP
    head's, of magnitude ~10) differ by more than 1e-5 in float32 too.
    """
    scale = max(1.0, float(np.max(np.abs(reference))))
    return scale * (4.0 * _UNIT_ROUNDOFF[compute_dtype] if compute_dtype in _UNIT_ROUNDOFF else 1e-5)
