"""Hugging Face `BeitModel` / `BeitForImageClassification` checkpoints, and reading any BEiT checkpoint file.

`transformers` saves BEiT under its own names (`encoder.layer.{i}.attention.
attention.query`, `lambda_1`, `pooler.layernorm`...). They are renamed into
timm's `Beit` keys (separate query/key/value weights joined into `qkv`, the
query/value biases kept as `q_bias`/`v_bias`), so one loader serves both. A
`config.json` beside the file is honoured: the model must have its
architecture, and adopts its LayerNorm epsilon (1e-12 in `BeitConfig`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from keras_vit.weights import formats, hf_config
from keras_vit.weights.errors import CheckpointError, listing
from keras_vit.weights.safetensors_io import read_safetensors
from keras_vit.weights.timm_beit_keys import load_timm_beit_state

_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "encoder.relative_position_bias.relative_position_bias_table": "rel_pos_bias.relative_position_bias_table",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "pooler.layernorm.weight": "fc_norm.weight",
    "pooler.layernorm.bias": "fc_norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}
_IN_LAYER = {
    "attention.attention.query.bias": "attn.q_bias",
    "attention.attention.value.bias": "attn.v_bias",
    "attention.attention.key.bias": "attn.k_bias",  # BEiT has none: reported as unexpected (an HF ViT file)
    "attention.attention.relative_position_bias.relative_position_bias_table": "attn.relative_position_bias_table",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "intermediate.dense.weight": "mlp.fc1.weight",
    "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight",
    "output.dense.bias": "mlp.fc2.bias",
    "layernorm_before.weight": "norm1.weight",
    "layernorm_before.bias": "norm1.bias",
    "layernorm_after.weight": "norm2.weight",
    "layernorm_after.bias": "norm2.bias",
    "lambda_1": "gamma_1",
    "lambda_2": "gamma_2",
}
_UNUSED = ("embeddings.mask_token",)  # masked-image-modelling input only


def is_hf_beit_state(state: dict[str, np.ndarray]) -> bool:
    """Whether a state uses Hugging Face names (`[beit.]encoder.layer.{i}...`) rather than timm's."""
    return any(_LAYER.match(key.removeprefix("beit.")) for key in state)


def hf_beit_to_timm(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Renames a Hugging Face BEiT state into timm `Beit` keys.

    Returns:
        The timm-keyed state and the keys left out (the mask token). Keys with
        no BEiT counterpart keep their name, so the loader reports them.
    """
    out, skipped, qkv = {}, [], {}
    for key, value in state.items():
        name = key.removeprefix("beit.")
        if name in _UNUSED:
            skipped.append(key)
            continue
        match = _LAYER.match(name)
        if match is None:
            out[_TOP.get(name, key)] = value
            continue
        index, rest = match.groups()
        projection = re.fullmatch(r"attention\.attention\.(query|key|value)\.weight", rest)
        if projection:
            qkv.setdefault(index, {})[projection.group(1)] = value
        elif rest.endswith("relative_position_index"):
            skipped.append(key)
        else:
            out[f"blocks.{index}.{_IN_LAYER.get(rest, rest)}"] = value
    for index, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(
                f"Layer {index} of the Hugging Face BEiT checkpoint has only the {sorted(parts)} projection(s); "
                "a complete file has query, key and value. Download it again."
            )
        out[f"blocks.{index}.attn.qkv.weight"] = np.concatenate([parts[n] for n in ("query", "key", "value")], axis=0)
    return out, skipped


def arch_from_hf_beit_config(config: dict[str, Any]) -> dict[str, Any]:
    """`keras_vit.BEiT` arguments from a `transformers.BeitConfig` dict (its defaults for missing fields)."""
    activation = config.get("hidden_act", "gelu")
    if activation != "gelu":
        raise ValueError(f"keras_vit's BEiT uses exact GELU; the config asks for hidden_act={activation!r}.")
    scale = config.get("layer_scale_init_value", 0.1)
    mean_pooling = bool(config.get("use_mean_pooling", True))
    labels = config.get("id2label")
    classes = config.get("num_labels", len(labels) if isinstance(labels, dict) else None)
    return dict(
        image_size=int(config.get("image_size", 224)),
        patch_size=int(config.get("patch_size", 16)),
        num_channels=int(config.get("num_channels", 3)),
        hidden_dim=int(config.get("hidden_size", 768)),
        depth=int(config.get("num_hidden_layers", 12)),
        num_heads=int(config.get("num_attention_heads", 12)),
        mlp_dim=int(config.get("intermediate_size", 3072)),
        layer_scale_init=float(scale) if scale and scale > 0 else None,
        position_embedding="learned" if config.get("use_absolute_position_embeddings", False) else "none",
        relative_position_bias=bool(config.get("use_relative_position_bias", False)),
        shared_relative_position_bias=bool(config.get("use_shared_relative_position_bias", False)),
        pooling="gap" if mean_pooling else "token",
        fc_norm=mean_pooling,
        num_classes=None if classes is None else int(classes),
        layer_norm_epsilon=float(config.get("layer_norm_eps", 1e-12)),
    )


# Architecture arguments a model must share with the config (image size and classes may differ: the loader adapts).
_MUST_MATCH = (
    "patch_size",
    "num_channels",
    "hidden_dim",
    "depth",
    "num_heads",
    "mlp_dim",
    "position_embedding",
    "relative_position_bias",
    "shared_relative_position_bias",
    "pooling",
)


def check_model_against_config(model, arch: dict[str, Any], config_path: str) -> None:
    """Refuses a model that contradicts the `config.json`, naming both values for every field."""
    ours = model.config
    expected = dict(arch, patch_size=(arch["patch_size"],) * 2)
    clashes = [
        f"{name}={expected[name]!r} in config.json, but the model has {name}={getattr(ours, name)!r}"
        for name in _MUST_MATCH
        if getattr(ours, name) != expected[name]
    ]
    if (ours.layer_scale_init is None) != (arch["layer_scale_init"] is None):
        clashes.append(
            f"layer_scale_init={arch['layer_scale_init']!r} in config.json, "
            f"but the model has layer_scale_init={ours.layer_scale_init!r}"
        )
    if clashes:
        raise CheckpointError(
            "\n".join(
                [
                    f"Model '{model.name}' contradicts '{config_path}'; nothing was loaded.",
                    listing("contradictions", clashes),
                    "Build the model the checkpoint was trained as: keras_vit.BEiT(**keras_vit.weights.beit_hf."
                    "arch_from_hf_beit_config(config)) with the parsed config.json (pass image_size or num_classes "
                    "to change those).",
                ]
            )
        )


def load_beit_checkpoint(model, path: str):
    """Loads a local BEiT checkpoint (timm or Hugging Face safetensors, keras_vit `.weights.h5`) into `model`.

    Returns:
        A `keras_vit.weights.LoadReport`.

    Raises:
        CheckpointError: the file is not a BEiT of the model's architecture
            (naming what was expected and what the file holds), or is unreadable.
    """
    from keras_vit.weights import loading

    kind = formats.detect_format(path)
    if kind == formats.KERAS_H5:
        return loading._load_keras_weights(model, path)
    if kind != formats.SAFETENSORS:
        raise CheckpointError(
            f"'{path}' is a {kind} file; BEiT checkpoints are timm or Hugging Face safetensors or keras_vit "
            ".weights.h5. Nothing was loaded."
        )
    state, _ = read_safetensors(path)
    if not is_hf_beit_state(state):
        return load_timm_beit_state(model, state, path=path, format=kind, flavor="timm")
    state, skipped = hf_beit_to_timm(state)
    config_path = hf_config.config_beside(path)
    epsilon = None
    if config_path is not None:
        try:
            arch = arch_from_hf_beit_config(hf_config.read_hf_config(config_path))
        except (ValueError, TypeError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"'{config_path}': {error}") from None
        check_model_against_config(model, arch, config_path)
    report = load_timm_beit_state(model, state, path=path, format=kind, flavor="hf")
    if config_path is not None:
        epsilon = hf_config.adopt_layer_norm_epsilon(model, arch["layer_norm_epsilon"], config_path)
    report.skipped += skipped
    report.config, report.layer_norm_epsilon = config_path, epsilon
    return report
