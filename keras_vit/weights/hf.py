"""Hugging Face `transformers` ViT/DeiT checkpoints: keys to timm's, and `config.json` to our arguments.

Covers `ViTModel` (keys `embeddings.*`, `encoder.layer.{i}.*`, `layernorm.*`,
`pooler.dense.*`), `ViTForImageClassification` (the same under `vit.` plus
`classifier.*`) and `DeiTForImageClassificationWithTeacher` (under `deit.`,
with `distillation_token`, `cls_classifier` and `distillation_classifier`).
HF splits attention into separate `query`/`key`/`value` Linear layers; timm
fuses them into one `qkv` (rows ordered q, k, v), which is what is built here.
HF's pooler (Dense + tanh on the normalised class token) is the original ViT's
`pre_logits` layer.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from keras_vit.weights.errors import CheckpointError

_MODEL_PREFIXES = ("vit.", "deit.")
_SIMPLE = {
    "embeddings.cls_token": "cls_token",
    "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "pooler.dense.weight": "pre_logits.fc.weight",
    "pooler.dense.bias": "pre_logits.fc.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
    "cls_classifier.weight": "head.weight",
    "cls_classifier.bias": "head.bias",
    "distillation_classifier.weight": "head_dist.weight",
    "distillation_classifier.bias": "head_dist.bias",
}
_LAYER = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")


def is_hf_state(state: dict[str, Any]) -> bool:
    """Whether a state dict uses `transformers` ViT/DeiT names."""
    return any(k.startswith(("embeddings.", "vit.embeddings.", "deit.embeddings.")) for k in state)


def hf_to_timm(state: dict[str, np.ndarray], path: str = "<state>") -> dict[str, np.ndarray]:
    """Renames (and fuses q/k/v of) a `transformers` ViT/DeiT state dict into timm keys.

    Unknown keys are kept under their own names so the loader reports them.

    Raises:
        CheckpointError: a layer's query/key/value are incomplete or differ in
            shape (naming `path` and the tensors).
    """
    out: dict[str, np.ndarray] = {}
    qkv: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in state.items():
        name = key
        for prefix in _MODEL_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        if name in _SIMPLE:
            out[_SIMPLE[name]] = value
            continue
        match = _LAYER_KEY.match(name)
        if match:
            index, sub, kind = int(match.group(1)), match.group(2), match.group(3)
            if sub.startswith("attention.attention.") and sub.rsplit(".", 1)[-1] in ("query", "key", "value"):
                qkv.setdefault((index, kind), {})[sub.rsplit(".", 1)[-1]] = value
                continue
            if sub in _LAYER:
                out[f"blocks.{index}.{_LAYER[sub]}.{kind}"] = value
                continue
        out[key] = value
    for (index, kind), parts in qkv.items():
        out[f"blocks.{index}.attn.qkv.{kind}"] = fuse_qkv(parts, index, kind, path)
    return out


def fuse_qkv(parts: dict[str, np.ndarray], index: int, kind: str, path: str) -> np.ndarray:
    """timm's fused `qkv` weight or bias (rows q, k, v) from one layer's separate query/key/value tensors.

    Raises:
        CheckpointError: a part is missing or the shapes differ (naming `path`, the layer and the shapes).
    """
    missing = [p for p in ("query", "key", "value") if p not in parts]
    if missing:
        raise CheckpointError(
            f"'{path}': layer {index} has no attention {missing} {kind}; the file is incomplete. Download it again."
        )
    shapes = {p: tuple(np.shape(parts[p])) for p in ("query", "key", "value")}
    if len(set(shapes.values())) != 1 or len(shapes["query"]) != (2 if kind == "weight" else 1):
        raise CheckpointError(
            f"'{path}': the attention {kind}s of layer {index} have shapes {shapes}; they must be equal "
            f"{'(out, in) matrices' if kind == 'weight' else 'vectors'}. The file is corrupt."
        )
    return np.concatenate([parts["query"], parts["key"], parts["value"]])


def encoder_arch_from_hf_config(config: dict[str, Any]) -> dict[str, Any]:
    """The encoder's `ViT` arguments, read the same way from every Hugging Face ViT-family `config.json`.

    ViT, DeiT and ViTMAE configs share these fields and `transformers`' defaults for them.
    """
    return dict(
        image_size=int(config.get("image_size", 224)),
        patch_size=int(config.get("patch_size", 16)),
        num_channels=int(config.get("num_channels", 3)),
        hidden_dim=int(config.get("hidden_size", 768)),
        depth=int(config.get("num_hidden_layers", 12)),
        num_heads=int(config.get("num_attention_heads", 12)),
        mlp_dim=int(config.get("intermediate_size", 3072)),
        qkv_bias=bool(config.get("qkv_bias", True)),
        layer_norm_epsilon=float(config.get("layer_norm_eps", 1e-12)),
    )


def arch_from_hf_config(config: dict[str, Any]) -> dict[str, Any]:
    """keras_vit `ViT` arguments equivalent to a `transformers` `ViTConfig`/`DeiTConfig` dict (`config.json`).

    Args:
        config: the parsed `config.json`.

    Returns:
        Keyword arguments for `keras_vit.ViT`. The head size comes from
        `id2label` when the architecture is a classifier, else 0.
    """
    model_type = config.get("model_type", "vit")
    if model_type not in ("vit", "deit"):
        raise ValueError(
            "Only Hugging Face ViT/DeiT configs are supported here; CLIP, SigLIP and DINOv2 vision towers load "
            "with keras_vit.ViT(**keras_vit.weights.arch_from_hf_config(config), weights=path). "
            f"Received: model_type={model_type!r}"
        )
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(
            f"keras_vit's MLP uses exact (erf) GELU; this config uses hidden_act={act!r}, "
            "so outputs would differ. Received: hidden_act=" + repr(act)
        )
    architectures = config.get("architectures") or []
    classifier = any("ForImageClassification" in a for a in architectures)
    distilled = any("WithTeacher" in a for a in architectures)
    labels = config.get("id2label") or {}
    return dict(
        encoder_arch_from_hf_config(config),
        distillation_token=distilled,
        num_classes=len(labels) if classifier else 0,
    )
