"""The one key map: keras_vit variable paths <-> timm `VisionTransformer` state-dict keys.

Every reader converts its format into timm's key names and PyTorch layouts
(Linear `(out, in)`, Conv2d `(out, in, kh, kw)`), and the loader maps those
onto the model here. It works on any Keras model whose layers carry the
keras_vit names (`patch_embed`, `prefix_tokens`, `pos_embed`, `block_{i}`,
`norm`, `fc_norm`, `pre_logits`, `head`, `head_dist`), without importing the
model classes.
"""

from __future__ import annotations

import re

import numpy as np

from keras_vit.weights.errors import CheckpointError

# Layouts: how a timm tensor becomes a Keras variable.
SAME, DENSE, CONV = "same", "dense", "conv"
CLASSIFIER_PREFIXES = ("head.", "head_dist.", "pre_logits.")
_BLOCK = re.compile(r"^block_(\d+)$")
_BRANCH = re.compile(r"^(attns|ffns)_(\d+)$")  # ParallelThingsBlock's branches, timm's `attns.0`, `ffns.1`...
_NORM_NAMES = ("norm", "fc_norm", "norm_pre", "norm1", "norm2", "q_norm", "k_norm", "in_norm", "sub_norm")
# Parameters held by a block or attention layer itself rather than a sublayer: same name in timm.
_OWN_PARAMETERS = ("mlp_bias", "lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2", "lambda_a", "lambda_b")


def timm_key(path: str) -> tuple[str, str]:
    """`(timm key, layout)` of a keras_vit variable path such as `block_0/attn/qkv/kernel`.

    Raises:
        CheckpointError: the path is not part of a keras_vit ViT.
    """
    parts = path.split("/")
    *layers, var = parts
    if layers == ["patch_embed", "projection"]:
        return ("patch_embed.proj.weight", CONV) if var == "kernel" else ("patch_embed.proj.bias", SAME)
    if layers == ["prefix_tokens"] and var in ("cls_token", "dist_token", "reg_token"):
        return var, SAME
    if layers == ["pos_embed"] and var == "embeddings":
        return "pos_embed", SAME
    if layers == ["attn_pool"] and var == "latent":
        return "attn_pool.latent", SAME
    if layers == ["pre_logits"]:
        return ("pre_logits.fc.weight", DENSE) if var == "kernel" else ("pre_logits.fc.bias", SAME)
    if not layers:
        raise CheckpointError(f"Variable {path!r} does not belong to a keras_vit ViT layer.")
    match = _BLOCK.match(layers[0])
    names = [f"blocks.{match.group(1)}"] if match else [layers[0]]
    names += [".".join(_BRANCH.match(n).groups()) if _BRANCH.match(n) else n for n in layers[1:]]
    if var in _OWN_PARAMETERS:
        return ".".join(names + [var]), SAME
    if var == "kernel":
        return ".".join(names + ["weight"]), DENSE
    if var == "gamma" and layers[-1] in ("ls1", "ls2", "ls"):
        return ".".join(names + ["gamma"]), SAME
    if var in ("gamma", "scale") and layers[-1] in _NORM_NAMES:  # LayerNorm's gamma, RMSNorm's scale
        return ".".join(names + ["weight"]), SAME
    if var in ("bias", "beta"):
        return ".".join(names + ["bias"]), SAME
    raise CheckpointError(f"Variable {path!r} has no timm counterpart; is this a keras_vit ViT?")


def to_keras(array: np.ndarray, layout: str) -> np.ndarray:
    """A timm (PyTorch-layout) tensor in the layout of the Keras variable."""
    if layout == DENSE and array.ndim == 2:
        return array.T
    if layout == CONV and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array


def to_timm(array: np.ndarray, layout: str) -> np.ndarray:
    """A Keras variable's value in the layout timm stores it."""
    if layout == DENSE and array.ndim == 2:
        return array.T
    if layout == CONV and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    return array


def model_targets(model) -> dict[str, tuple[object, str]]:
    """timm key -> (Keras variable, layout) for every weight of `model`."""
    targets: dict[str, tuple[object, str]] = {}
    for variable in model.weights:
        key, layout = timm_key(variable.path)
        if key in targets:
            raise CheckpointError(f"Two variables of the model map to timm key {key!r}; layer names are not unique.")
        targets[key] = (variable, layout)
    return targets


def model_state_dict(model) -> dict[str, np.ndarray]:
    """The model's weights as a timm state dict (timm names and PyTorch layouts), float32 NumPy arrays."""
    return {
        key: np.ascontiguousarray(to_timm(np.asarray(variable.numpy()), layout))
        for key, (variable, layout) in model_targets(model).items()
    }


def strip_wrapper_prefix(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Removes a `module.` (DataParallel) or `model.` prefix shared by every key."""
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def is_classifier_key(key: str) -> bool:
    return key.startswith(CLASSIFIER_PREFIXES)
