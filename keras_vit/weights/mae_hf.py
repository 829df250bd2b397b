"""MAE checkpoints: Hugging Face `ViTMAEForPreTraining`, the paper's own keys, and keras_vit `.keras` MAEs.

Every source is mapped to the key names of the paper's code (timm's ViT keys
for the encoder, plus `mask_token`, `decoder_embed`, `decoder_pos_embed`,
`decoder_blocks.{i}.*`, `decoder_norm`, `decoder_pred`), in PyTorch layouts.
Hugging Face keys come in three spellings, all read: the published
checkpoints' (`encoder.layer.{i}.attention.attention.query`,
`decoder.decoder_layers.{i}...`), transformers v5's in memory
(`layers.{i}.attention.q_proj`, ...) and what v5's `save_pretrained` writes
(the published spelling, with `decoder.decoder_encoder.layer.{i}...`). The encoder part of any
of them loads into a plain `keras_vit.ViT` for fine-tuning.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from typing import Any

import numpy as np

from keras_vit.weights import hf_config, timm_keys
from keras_vit.weights.errors import CheckpointError, listing, shape_str
from keras_vit.weights.hf import encoder_arch_from_hf_config
from keras_vit.weights.safetensors_io import read_safetensors

_BLOCK_PARTS = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_QKV_PARTS = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
}
_SIMPLE = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_BLOCK = re.compile(r"^(?:encoder\.layer|layers|decoder_layers|decoder_encoder\.layer)\.(\d+)\.(.+)\.(weight|bias)$")
_DECODER_LAYER = re.compile(r"^decoder_block_(\d+)$")
_DECODER_KEYS = ("mask_token", "decoder_")
_WEIGHTS_FILES = ("model.safetensors",)


def to_mae_keys(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames a Hugging Face ViTMAE state dict (either spelling) to the paper's keys, fusing q/k/v.

    Keys already in the paper's (timm) form pass through; unknown keys are
    kept under their own names so the loader reports them.
    """
    out: dict[str, np.ndarray] = {}
    qkv: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    for key, value in timm_keys.strip_wrapper_prefix(state).items():
        name, prefix = key, "blocks"
        if name.startswith("vit."):
            name = name[len("vit.") :]
        elif name.startswith("decoder."):
            name, prefix = name[len("decoder.") :], "decoder_blocks"
        if name in _SIMPLE and prefix == "blocks":
            out[_SIMPLE[name]] = value
            continue
        match = _HF_BLOCK.match(name)
        if match:
            index, part, kind = match.groups()
            if part in _QKV_PARTS:
                qkv.setdefault((prefix, index, kind), {})[_QKV_PARTS[part]] = value
                continue
            if part in _BLOCK_PARTS:
                out[f"{prefix}.{index}.{_BLOCK_PARTS[part]}.{kind}"] = value
                continue
        out[name] = value
    for (prefix, index, kind), parts in qkv.items():
        missing = [p for p in "qkv" if p not in parts]
        if missing:
            raise CheckpointError(
                f"MAE checkpoint: {prefix} {index} has no attention {missing} {kind}; incomplete file."
            )
        out[f"{prefix}.{index}.attn.qkv.{kind}"] = np.concatenate([parts["q"], parts["k"], parts["v"]])
    return out


def is_mae_state(state: dict[str, Any]) -> bool:
    """Whether a state dict (paper keys) holds an MAE decoder, not only a ViT."""
    return any(k.startswith(_DECODER_KEYS) for k in state)


def mae_key(path: str) -> tuple[str, str]:
    """`(paper key, layout)` of an MAE variable path such as `decoder_block_0/attn/qkv/kernel`."""
    layer, *rest = path.split("/")
    match = _DECODER_LAYER.match(layer)
    if match:
        key, layout = timm_keys.timm_key("/".join([f"block_{match.group(1)}", *rest]))
        return "decoder_" + key, layout
    if layer in ("mask_token", "decoder_pos_embed"):
        return layer, timm_keys.SAME
    if layer in ("decoder_embed", "decoder_norm", "decoder_pred"):
        kind = {"kernel": "weight", "gamma": "weight"}.get(rest[-1], "bias")
        return f"{layer}.{kind}", timm_keys.DENSE if rest[-1] == "kernel" else timm_keys.SAME
    return timm_keys.timm_key(path)


def _targets(model) -> dict[str, tuple[Any, str]]:
    targets = {}
    for variable in model.weights:
        if variable.path.startswith("noise_generator"):
            continue  # the masking noise's random state, not a weight of the checkpoint
        key, layout = mae_key(variable.path)
        targets[key] = (variable, layout)
    return targets


def weights_file(path: str) -> str:
    """The safetensors file of a checkpoint given as a file or a `save_pretrained` folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in _WEIGHTS_FILES:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise CheckpointError(
            f"Folder '{path}' holds no model.safetensors. Pass the folder written by "
            "ViTMAEForPreTraining.save_pretrained, or the weights file itself."
        )
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint '{path}' does not exist. Check the path.")
    return path


def read_config(path: str) -> dict[str, Any] | None:
    """The `config.json` beside a checkpoint file (or in its folder), or None."""
    path = os.fspath(path)
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    config_path = os.path.join(folder, hf_config.CONFIG_NAME)
    return hf_config.read_hf_config(config_path) if os.path.isfile(config_path) else None


def arguments_from_hf_config(config: dict[str, Any]) -> dict[str, Any]:
    """`MAE` arguments equivalent to a `transformers` `ViTMAEConfig` dict."""
    model_type = config.get("model_type")
    if model_type != "vit_mae":
        raise CheckpointError(
            f"config.json describes a {model_type!r} model, not an MAE (model_type 'vit_mae'). "
            f"Load ViT checkpoints with keras_vit.ViT(weights=...). Received: model_type={model_type!r}"
        )
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"keras_vit uses exact (erf) GELU; this MAE uses another. Received: hidden_act={act!r}")
    encoder = encoder_arch_from_hf_config(config)
    return dict(
        encoder_kwargs=encoder,
        decoder_dim=int(config.get("decoder_hidden_size", 512)),
        decoder_depth=int(config.get("decoder_num_hidden_layers", 8)),
        decoder_heads=int(config.get("decoder_num_attention_heads", 16)),
        decoder_mlp_dim=int(config.get("decoder_intermediate_size", 2048)),
        mask_ratio=float(config.get("mask_ratio", 0.75)),
        norm_pix_loss=bool(config.get("norm_pix_loss", False)),
    )


def checkpoint_arguments(path: str) -> dict[str, Any]:
    """`MAE` arguments from the `config.json` beside a checkpoint; `{}` when there is none (or a `.weights.h5`)."""
    if str(path).endswith(".weights.h5"):
        return {}
    config = read_config(path)
    return {} if config is None else arguments_from_hf_config(config)


def read_mae_state(path: str) -> dict[str, np.ndarray]:
    """An MAE checkpoint (safetensors file or folder, or a keras_vit `.keras` MAE) in the paper's keys.

    Raises:
        CheckpointError: the file holds no MAE decoder (a plain ViT or something else).
    """
    file = weights_file(path)
    if file.endswith(".keras"):
        if not _saves_an_mae(file):
            raise CheckpointError(
                f"'{file}' is not an MAE checkpoint: the .keras archive holds no keras_vit MAE. "
                "Load a saved ViT with keras.saving.load_model, or its weights with keras_vit.ViT(name, weights=...)."
            )
        import keras

        return mae_state_dict(keras.saving.load_model(file, compile=False))
    tensors, _ = read_safetensors(file)
    state = to_mae_keys(tensors)
    if not is_mae_state(state):
        raise CheckpointError(
            f"'{file}' is not an MAE checkpoint: it has no decoder (decoder_embed, decoder_blocks, mask_token). "
            "Load encoder-only ViT weights with keras_vit.ViT(name, weights=...)."
        )
    return state


def load_mae_checkpoint(model, path: str):
    """Loads an MAE checkpoint into a keras_vit `MAE`, all or nothing; returns the number of variables written."""
    state = read_mae_state(path)
    targets = _targets(model)
    missing = sorted(set(targets) - set(state))
    unexpected = sorted(set(state) - set(targets))
    plan, mismatched = [], []
    for key in sorted(set(targets) & set(state)):
        variable, layout = targets[key]
        value = timm_keys.to_keras(np.asarray(state[key]), layout)
        if tuple(value.shape) != tuple(variable.shape):
            mismatched.append(f"{key}: file {shape_str(state[key].shape)} vs model {shape_str(variable.shape)}")
        else:
            plan.append((variable, value))
    if missing or unexpected or mismatched:
        parts = [f"The MAE checkpoint '{path}' does not fit model '{model.name}'; nothing was loaded."]
        if missing:
            parts.append(listing("missing from the file", missing))
        if unexpected:
            parts.append(listing("unexpected in the file", unexpected))
        if mismatched:
            parts.append(listing("shape mismatches", mismatched))
        parts.append("Build the MAE with the checkpoint's architecture, or keep its config.json beside the file.")
        raise CheckpointError("\n".join(parts))
    for variable, value in plan:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return len(plan)


def mae_state_dict(model) -> dict[str, np.ndarray]:
    """A keras_vit `MAE`'s weights in the paper's keys and PyTorch layouts."""
    return {
        key: np.ascontiguousarray(timm_keys.to_timm(np.asarray(variable.numpy()), layout))
        for key, (variable, layout) in _targets(model).items()
    }


def _saves_an_mae(path: str) -> bool:
    """True when a `.keras` archive's top-level object is a keras_vit `MAE` (its `config.json` says so)."""

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return False  # not a readable .keras archive: the general loader reports it
    return isinstance(config, dict) and config.get("registered_name") == "keras_vit>MAE"


def encoder_state(path: str, model) -> dict[str, np.ndarray] | None:
    """The encoder weights of an MAE checkpoint, in timm keys, for loading into the ViT `model`; None if not an MAE.

    Reads a keras_vit `.keras` MAE, or an MAE safetensors file/folder. The
    decoder is dropped. When `model` normalises after pooling (`fc_norm`, the
    paper's fine-tuning), the encoder's final `norm` is dropped and `fc_norm`
    keeps its fresh initialisation, as in the paper's fine-tuning code.
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        if not _saves_an_mae(path):  # read the archive's config, not the whole model, for every other .keras
            return None
        import keras

        state = mae_state_dict(keras.saving.load_model(path, compile=False))
    elif os.path.isdir(path) or path.endswith(".safetensors"):
        try:
            tensors, _ = read_safetensors(weights_file(path))
        except CheckpointError:
            if os.path.isdir(path):
                raise
            return None
        state = to_mae_keys(tensors)
        if not is_mae_state(state):
            return None
    else:
        return None
    state = {k: v for k, v in state.items() if not k.startswith(_DECODER_KEYS)}
    layer_names = {layer.name for layer in model.layers}
    if "norm" not in layer_names and "fc_norm" in layer_names:
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}
        for variable in model.get_layer("fc_norm").weights:
            key, layout = timm_keys.timm_key(variable.path)
            state[key] = timm_keys.to_timm(np.asarray(variable.numpy()), layout)
        warnings.warn(
            "MAE encoder -> ViT with fc_norm: the encoder's final norm is dropped and fc_norm starts fresh "
            "(the paper's fine-tuning with global average pooling).",
            stacklevel=3,
        )
    return state
