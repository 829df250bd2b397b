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
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_vit.export.metadata import METADATA_FILE, ServingMetadata, metadata_for_model
from keras_vit.export.signatures import DEFAULT_SIGNATURE, FEATURES_SIGNATURE, build_archive
from keras_vit.export.warmup import write_warmup_requests

EXTRA_DIR = "assets.extra"  # TF Serving ignores it for loading; warm-up requests live here too
_VERSION = re.compile(r"^[0-9]+$")


def list_versions(base_path: str) -> list[int]:
    """Numbered version folders under `base_path` (TF Serving's rule: all-digit names), ascending."""
    if not os.path.isdir(base_path):
        return []
    return sorted(int(entry) for entry in os.listdir(base_path)
                  if _VERSION.match(entry) and os.path.isdir(os.path.join(base_path, entry)))


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
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    pixel_scale: float = 255.0,
    class_names: Sequence[str] | None = None,
    top_k: int = 5,
    overwrite: bool = False,
    verify: bool = False,
    warmup: bool = True,
) -> str:
    """Exports `model` as a TF Serving SavedModel with preprocessing and top-k in the graph.

    Args:
        model: a keras_vit model (or any Keras image model with a static input size).
        path: `saved_models/<name>/<version>`; without a trailing version number the
            next free version under `path` is used.
        mean, std, crop_pct, interpolation: preprocessing overrides; required
            (`mean`, `std`) for models not built from the registry.
        pixel_scale: value of a white pixel in client inputs. Defaults to 255.
        class_names: one name per class, returned as the `labels` output.
        top_k: classes returned by the `classes`/`scores`/`labels` outputs. Defaults to 5.
        overwrite: replace an existing version folder. Defaults to False.
        verify: reload the written model and compare it with `model` (see `verify_saved_model`).
        warmup: write TF Serving warm-up requests (`assets.extra/tf_serving_warmup_requests`).

    Returns:
        The absolute path of the version folder written.
    """
    meta = metadata_for_model(model, mean=mean, std=std, crop_pct=crop_pct, interpolation=interpolation,
                              pixel_scale=pixel_scale, class_names=class_names, top_k=top_k)
    base, version = resolve_export_path(path)
    final = os.path.join(base, str(version))
    if os.path.exists(final) and not overwrite:
        raise ValueError(f"Version folder {final!r} exists. Export a new version number (servers pick the highest) "
                         f"or pass overwrite=True.")
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
        raise ValueError(f"{version_path!r} has no {EXTRA_DIR}/{METADATA_FILE}; it was not written by "
                         "keras_vit.export.saved_model.")
    with open(file) as f:
        return ServingMetadata.from_dict(json.load(f))


def verify_saved_model(
    model: keras.Model, path: str, meta: ServingMetadata | None = None, *, atol: float = 1e-5, batch_size: int = 3
) -> dict[str, Any]:
    """Reloads a written SavedModel and checks its signatures against the Keras model.

    Feeds random pixels larger than the model's input (so the graph resizes and
    crops) and compares `serving_default` logits (or features) and `features`
    with the Keras model run on the same batch preprocessed eagerly.

    Returns:
        {"max_abs_diff": {output: float}, "batch_size": int}.

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
    diffs = {key: float(np.max(np.abs(served[key].numpy() - np.asarray(model(normalised, training=False)))))}
    if FEATURES_SIGNATURE in loaded.signatures and hasattr(model, "feature_extractor"):
        features = loaded.signatures[FEATURES_SIGNATURE](images=tf.constant(pixels))["features"].numpy()
        diffs["features"] = float(np.max(np.abs(features - np.asarray(model.feature_extractor()(normalised)))))
    bad = {k: v for k, v in diffs.items() if not v <= atol}
    if bad:
        raise ValueError(f"Exported model at {path!r} differs from the Keras model: max abs diff {bad} > atol={atol}.")
    return {"max_abs_diff": diffs, "batch_size": batch_size}
