"""`keras-vit visualize --model PATH_OR_NAME --image FILE... --out DIR`: attention pictures of your images.

Writes the rollout overlays, per-head maps of one block for each image, mean
attention distance, position-embedding similarity, activation statistics, and
the arrays behind them (`arrays.npz`), then prints the files it wrote.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import numpy as np
from absl import flags

from keras_vit.visualize.figures import publish

FLAGS = flags.FLAGS


def _define(kind: str, name: str, default: Any, help_text: str) -> None:
    """Defines a flag unless another command module in this process already did (same meaning)."""
    if name not in FLAGS:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text)


_define("string", "model", None, "A `.keras` file, or a registered model name (keras-vit list) built from the zoo.")
_define("multi_string", "image", None, "Image file(s) (PNG/JPEG); repeat the flag for several.")
_define("string", "out", "visualizations", "Folder to write the PNG files into.")
_define("integer", "layer", -1, "Block whose per-head maps are drawn (negative counts from the last).")
_define("string", "token", "cls", "Query token of the maps: cls, dist (DeiT) or mean (models without a class token).")
_define("string", "fusion", "mean", "How rollout fuses heads: mean, max or min.")
_define("float", "discard_ratio", 0.0, "Rollout: fraction of the lowest attentions to drop, in [0, 1).")
_define("list", "image_size", None, "Run at this input size, e.g. 224,320 (position embeddings resampled).")
_define("list", "mean", None, "Per-channel mean of [0, 1] pixels; defaults to the model's spec.")
_define("list", "std", None, "Per-channel std of [0, 1] pixels; defaults to the model's spec.")


def load_model(path_or_name: str) -> Any:
    """A `.keras` file, or a registered name built from the zoo."""
    import keras

    import keras_vit  # noqa: F401 (registers the layers for loading)
    from keras_vit.models import create_model, list_models

    if path_or_name.endswith(".keras"):
        if not os.path.isfile(path_or_name):
            raise ValueError(f"Model file not found. Received: --model={path_or_name!r}")
        return keras.saving.load_model(path_or_name, compile=False)  # plotting needs no optimizer
    if path_or_name not in list_models("*"):
        raise ValueError(
            f"--model must be a .keras file or a registered model name (see `keras-vit list`). "
            f"Received: --model={path_or_name!r}"
        )
    return create_model(path_or_name)


def _floats(values: list[str] | None, name: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise ValueError(f"--{name} takes comma-separated numbers. Received: --{name}={','.join(values)}") from None


def preprocessing(model: Any, mean: tuple | None, std: tuple | None) -> tuple[tuple, tuple]:
    """Normalisation: the flags, else the registered spec of the model's variant, else 0.5/0.5."""
    from keras_vit.models import list_models, model_spec

    variant = getattr(model, "variant", None)
    if (mean is None or std is None) and variant and variant in list_models("*"):
        spec = model_spec(variant)
        mean, std = mean or spec.mean, std or spec.std
    if mean is None or std is None:
        print(
            "keras-vit visualize: no preprocessing spec for this model; using mean=0.5, std=0.5 (set --mean/--std).",
            file=sys.stderr,
        )
    channels = model.config.num_channels
    return mean or (0.5,) * channels, std or (0.5,) * channels


def _save_arrays(path: str, arrays: dict[str, np.ndarray]) -> str:
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=os.path.dirname(path))
    os.close(handle)
    try:
        np.savez_compressed(temporary, **arrays)
        publish(temporary, path)
    except BaseException:
        os.remove(temporary)
        raise
    return path


def visualize(
    model: Any,
    image_paths: list[str],
    out: str,
    layer: int = -1,
    token: str = "cls",
    fusion: str = "mean",
    discard_ratio: float = 0.0,
    image_size: tuple[int, int] | None = None,
    mean: tuple | None = None,
    std: tuple | None = None,
) -> list[str]:
    """Writes every picture for `image_paths` into `out`; returns the files written."""
    from keras_vit import visualize as vis
    from keras_vit.visualize.tokens import check_layer, check_vit

    check_vit(model)
    check_layer(layer, model.config.depth)  # before anything is written
    if not image_paths:
        raise ValueError("Give at least one image with --image FILE.")
    if image_size is not None and tuple(image_size) != tuple(model.config.image_size):
        model = model.with_image_size(tuple(image_size))
    mean, std = preprocessing(model, mean, std)
    pictures = [vis.load_image(p) for p in image_paths]
    inputs, display = vis.prepare_images(pictures, model.config.image_size, model.config.num_channels, mean, std)
    os.makedirs(out, exist_ok=True)
    cached = vis.run_intermediates(model, inputs)
    written = []
    rollout = vis.plot_attention_rollout(
        model,
        inputs,
        os.path.join(out, "attention_rollout.png"),
        display_images=display,
        token=token,
        fusion=fusion,
        discard_ratio=discard_ratio,
        intermediates=cached,
    )
    written.append(rollout["path"])
    heads = []
    for index, image_path in enumerate(image_paths):
        stem = os.path.splitext(os.path.basename(image_path))[0]
        result = vis.plot_attention_heads(
            model,
            inputs,
            os.path.join(out, f"attention_heads_{index}_{stem}.png"),
            layer=layer,
            index=index,
            token=token,
            display_images=display,
            intermediates=cached,
        )
        heads.append(result["maps"])
        written.append(result["path"])
    distance = vis.plot_mean_attention_distance(
        model, inputs, os.path.join(out, "mean_attention_distance.png"), intermediates=cached
    )
    written.append(distance["path"])
    arrays = {"rollout": rollout["rollout"], "head_maps": np.stack(heads), "distance": distance["per_image"]}
    if model.config.position_embedding != "none":
        similarity_path = os.path.join(out, "position_embedding_similarity.png")
        similarity = vis.plot_position_embedding_similarity(model, similarity_path)
        written.append(similarity["path"])
        arrays["position_similarity"] = similarity["similarity"]
    stats = vis.plot_activation_statistics(
        model, inputs, os.path.join(out, "activation_statistics.png"), intermediates=cached
    )
    written.append(stats["path"])
    arrays.update(patch_norms=stats["patch_norms"], channel_mean_abs=stats["channel_mean_abs"])
    written.append(_save_arrays(os.path.join(out, "arrays.npz"), arrays))
    return written


def parse_image_size(value: Any) -> tuple[int, int] | None:
    """`--image_size` as (height, width): "H,W" or one size for a square.

    Another command module may own the flag as an int in the same process (tests); both forms are accepted.
    """
    if value is None or value == []:
        return None
    values = [value] if isinstance(value, int) else list(value)
    try:
        size = tuple(int(v) for v in values)
    except ValueError:
        size = ()
    if len(size) not in (1, 2) or min(size) <= 0:
        raise ValueError(f"--image_size takes H,W (or one size for a square). Received: --image_size={value!r}")
    return size * 2 if len(size) == 1 else size


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments {argv[1:]}; use --image FILE for images.")
    if not FLAGS.model:
        raise ValueError("--model is required: a .keras file or a registered model name.")
    from keras_vit.models.cli import require_image_model

    require_image_model(FLAGS.model, "visualize")
    image_size = parse_image_size(FLAGS.image_size)
    model = load_model(FLAGS.model)
    written = visualize(
        model,
        list(FLAGS.image or []),
        FLAGS.out,
        layer=FLAGS.layer,
        token=FLAGS.token,
        fusion=FLAGS.fusion,
        discard_ratio=FLAGS.discard_ratio,
        image_size=image_size,
        mean=_floats(FLAGS.mean, "mean"),
        std=_floats(FLAGS.std, "std"),
    )
    for path in written:
        print(path)
