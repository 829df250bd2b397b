"""A Hugging Face `config.json` beside a checkpoint: read it strictly, check it against the file and the model.

`transformers` saves the architecture next to the weights, including what the
tensors cannot tell (LayerNorm epsilon, head count, activation). The loader
uses it so that a checkpoint loads into the model it was trained as: settings
the model can take without new weights (the LayerNorm epsilon) are adopted;
a model that contradicts the config (another width, depth, head count, MLP
width, patch size, qkv bias or register count) is refused with both values
named; what the loader already adapts (image size: position embeddings
resampled; class count: fresh head) behaves as without a config.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import keras
import numpy as np

from keras_vit.weights.errors import CheckpointError, listing
from keras_vit.weights.hf import arch_from_hf_config

CONFIG_NAME = "config.json"

# config.json field -> keras_vit ViT argument that must agree with it (both sides of `arch_from_hf_config`).
_MUST_MATCH = {
    "patch_size": "patch_size",
    "num_channels": "num_channels",
    "hidden_size": "hidden_dim",
    "num_hidden_layers": "depth",
    "num_attention_heads": "num_heads",
    "intermediate_size": "mlp_dim",
    "qkv_bias": "qkv_bias",
}


def config_beside(checkpoint_path: str) -> str | None:
    """The `config.json` in the checkpoint's folder, if there is one."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), CONFIG_NAME)
    return path if os.path.isfile(path) else None


def read_hf_config(path: str) -> dict[str, Any]:
    """Parses a `config.json`, refusing invalid JSON, repeated keys and anything but an object."""

    def unique(pairs):
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise CheckpointError(f"'{path}' repeats the key(s) {repeated}; fix or download the config again.")
        return dict(pairs)

    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f, object_pairs_hook=unique)
    except (UnicodeError, json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"'{path}' is not valid JSON ({error}); fix or download the config again.") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"'{path}' holds a JSON {type(config).__name__}, not a Hugging Face config object.")
    return config


def config_arch(config: dict[str, Any], path: str) -> dict[str, Any]:
    """`arch_from_hf_config` plus register and label counts, every value checked; refusals as `CheckpointError`s."""
    try:
        arch = arch_from_hf_config(config)
        arch["num_register_tokens"] = int(config.get("num_register_tokens", 0))
        labels = config.get("id2label")
        declared = config.get("num_labels", len(labels) if isinstance(labels, dict) else None)
        arch["num_labels"] = None if declared is None else int(declared)
    except (ValueError, TypeError, OverflowError) as error:
        raise CheckpointError(f"'{path}': {error}") from None
    sizes = ("hidden_dim", "depth", "num_heads", "mlp_dim", "num_channels", "image_size", "patch_size")
    bad = [f"{name}={arch[name]!r}" for name in sizes if arch[name] <= 0]
    bad += [f"{name}={arch[name]!r}" for name in ("num_register_tokens", "num_labels") if (arch[name] or 0) < 0]
    epsilon = arch["layer_norm_epsilon"]
    if not math.isfinite(epsilon) or epsilon <= 0:
        bad.append(f"layer_norm_eps={epsilon!r}")
    if not isinstance(config.get("qkv_bias", True), bool):
        bad.append(f"qkv_bias={config['qkv_bias']!r}")
    if bad:
        raise CheckpointError(f"'{path}' holds impossible values: {', '.join(bad)}. Fix or download the config again.")
    return arch


def check_state(arch: dict[str, Any], state: dict[str, np.ndarray], config_path: str, checkpoint_path: str) -> None:
    """Refuses a config that does not describe the tensors beside it (two files that do not belong together)."""
    found: dict[str, Any] = {}
    proj = state.get("patch_embed.proj.weight")
    if proj is not None and np.ndim(proj) == 4:
        found["hidden_size"], found["num_channels"] = int(proj.shape[0]), int(proj.shape[1])
        found["patch_size"] = (int(proj.shape[2]), int(proj.shape[3]))
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if blocks:
        found["num_hidden_layers"] = max(blocks) + 1
        found["qkv_bias"] = "blocks.0.attn.qkv.bias" in state
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None and np.ndim(fc1) == 2:
        found["intermediate_size"] = int(fc1.shape[0])
    pos_embed, prefix = state.get("pos_embed"), int("cls_token" in state) + int("dist_token" in state)
    image, patch = np.broadcast_to(arch["image_size"], (2,)), np.broadcast_to(arch["patch_size"], (2,))
    if pos_embed is not None and np.ndim(pos_embed) == 3 and pos_embed.shape[1] > prefix:
        grid = int(image[0] // patch[0]) * int(image[1] // patch[1])
        if grid != pos_embed.shape[1] - prefix:
            found["image_size"] = f"a position table of {pos_embed.shape[1] - prefix} patches"
            arch = dict(arch, image_size=f"{int(image[0])}x{int(image[1])} ({grid} patches)")
    head = state.get("head.weight")
    if head is not None and np.ndim(head) == 2 and arch["num_labels"] is not None:
        found["num_labels"] = int(head.shape[0])
    expected = {field: arch[ours] for field, ours in _MUST_MATCH.items()}
    expected |= {"num_labels": arch["num_labels"], "image_size": arch["image_size"]}
    expected["patch_size"] = tuple(int(p) for p in np.broadcast_to(expected["patch_size"], (2,)))
    wrong = [
        f"{field}: config {_plain(expected[field])}, file {_plain(value)}"
        for field, value in found.items()
        if expected[field] != value
    ]
    if wrong:
        raise CheckpointError(
            "\n".join(
                [
                    f"'{config_path}' does not describe the checkpoint '{checkpoint_path}' beside it; nothing was loaded.",
                    listing("disagreements", wrong),
                    "Keep each checkpoint with the config.json it was saved with.",
                ]
            )
        )


def check_model(model, arch: dict[str, Any], config_path: str) -> None:
    """Refuses a model that contradicts the config, naming both values.

    Image size and class count may differ: the loader resamples position
    embeddings and keeps a fresh head, as it does without a config.
    """
    ours = getattr(model, "config", None)
    if ours is None or not hasattr(ours, "hidden_dim"):
        return  # a plain Keras model with keras_vit layer names: the tensor shapes are checked instead
    expected = dict(arch, patch_size=tuple(np.broadcast_to(arch["patch_size"], (2,)).tolist()))
    clashes = [
        f"{field}={expected[name]!r} in config.json, but the model has {name}={getattr(ours, name)!r}"
        for field, name in (*_MUST_MATCH.items(), ("num_register_tokens", "num_register_tokens"))
        if _normal(getattr(ours, name)) != _normal(expected[name])
    ]
    if clashes:
        raise CheckpointError(
            "\n".join(
                [
                    f"Model '{model.name}' contradicts '{config_path}'; nothing was loaded.",
                    listing("contradictions", clashes),
                    "Build the model the checkpoint was trained as, e.g. keras_vit.ViT(**keras_vit.weights."
                    "arch_from_hf_config(config)) with the parsed config.json, and pass only image_size or "
                    "num_classes to change it.",
                ]
            )
        )


def adopt_layer_norm_epsilon(model, epsilon: float, config_path: str) -> float | None:
    """Sets every LayerNorm of `model` (and the configs that record it) to the config's epsilon.

    Returns:
        The epsilon when it changed anything, else None.
    """
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.LayerNormalization)]
    if all(layer.epsilon == epsilon for layer in norms):
        return None
    previous = ", ".join(f"{e:g}" for e in sorted({float(layer.epsilon) for layer in norms}))
    for layer in layers:
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.epsilon = epsilon
        if hasattr(layer, "layer_norm_epsilon"):
            layer.layer_norm_epsilon = epsilon
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "layer_norm_epsilon"):
        config.layer_norm_epsilon = epsilon  # so get_config and `.keras` files keep it
    for function in ("train_function", "test_function", "predict_function"):  # traced with the old epsilon
        if getattr(model, function, None) is not None:
            setattr(model, function, None)
    warnings.warn(
        f"Using layer_norm_eps={epsilon:g} from '{config_path}' (the model was built with {previous}): "
        "the weights were trained with it.",
        stacklevel=4,
    )
    return epsilon


def _normal(value):
    """Compares ints, bools and (h, w) pairs alike."""
    if isinstance(value, list | tuple | np.ndarray):
        return tuple(int(v) for v in value)
    return value


def _plain(value) -> str:
    """Strings as they are, everything else as its repr."""
    return value if isinstance(value, str) else repr(value)
