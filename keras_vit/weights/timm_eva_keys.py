"""Key map of `keras_vit.EVA` variables <-> timm `Eva` state-dict keys.

timm's `Eva` shares most names with `VisionTransformer` (so `timm_keys`
handles those); its own are the LayerScale `gamma_1`/`gamma_2`, the separate
`q_bias`/`v_bias` of EVA attention, `norm_pre`, the mixed rotary frequencies
`rope.freqs`, the MAP head `attn_pool.*`, and RMSNorm's `scale` (timm `weight`).
"""

from __future__ import annotations

import numpy as np

from keras_vit.weights import timm_keys
from keras_vit.weights.errors import CheckpointError

SAME = timm_keys.SAME
_LAYER_SCALES = {"ls1": "gamma_1", "ls2": "gamma_2"}


def timm_key(path: str) -> tuple[str, str]:
    """`(timm key, layout)` of an EVA variable path such as `block_0/attn/q_bias`."""
    *layers, var = path.split("/")
    if layers and layers[0].startswith("block_"):
        block = f"blocks.{layers[0][len('block_') :]}"
        if layers[1:] in (["ls1"], ["ls2"]):
            return f"{block}.{_LAYER_SCALES[layers[1]]}", SAME
        if layers[1:] == ["attn"] and var in ("q_bias", "v_bias"):
            return f"{block}.attn.{var}", SAME
    if layers == ["rope"] and var == "freqs":
        return "rope.freqs", SAME
    if layers == ["attn_pool"] and var == "latent":
        return "attn_pool.latent", SAME
    if layers and (layers[-1] in ("norm_pre", "norm") and var == "gamma" or var == "scale"):
        return ".".join(_timm_layers(layers) + ["weight"]), SAME
    return timm_keys.timm_key(path)


def _timm_layers(layers: list[str]) -> list[str]:
    head, *rest = layers
    return ([f"blocks.{head[len('block_') :]}"] if head.startswith("block_") else [head]) + rest


def model_targets(model) -> dict[str, tuple[object, str]]:
    """timm key -> (Keras variable, layout) for every weight of an EVA model."""
    targets: dict[str, tuple[object, str]] = {}
    for variable in model.weights:
        key, layout = timm_key(variable.path)
        if key in targets:
            raise CheckpointError(f"Two variables of the model map to timm key {key!r}; layer names are not unique.")
        targets[key] = (variable, layout)
    return targets


def model_state_dict(model) -> dict[str, np.ndarray]:
    """An EVA model's weights as a timm `Eva` state dict (timm names, PyTorch layouts)."""
    return {
        key: np.ascontiguousarray(timm_keys.to_timm(np.asarray(variable.numpy()), layout))
        for key, (variable, layout) in model_targets(model).items()
    }
