"""Hugging Face vision towers: CLIP, SigLIP (and fixed-resolution SigLIP 2) and DINOv2 (with registers).

Reads the `.safetensors` files `transformers` writes for `CLIPVisionModel`,
`SiglipVisionModel`, `Dinov2Model` and `Dinov2WithRegistersModel`, and the
vision tower inside a `CLIPModel` or `SiglipModel` file (the text tower, its
projection and `logit_scale` are left out and listed in the load report).
Each is renamed to timm's `VisionTransformer` keys, so the one key map
(`timm_keys`) puts it into a `keras_vit.ViT`, and its `config.json` becomes
`ViT` arguments (`arch_from_config`):

- CLIP: class token, `pre_layrnorm` -> `norm_pre` (pre_norm=True,
  patch_bias=False), QuickGELU (or the config's `hidden_act`), LayerNorm eps 1e-5,
  `post_layernorm` -> `norm`, token pooling. The image projection of a
  `CLIPModel` (or `CLIPVisionModelWithProjection`) file, `visual_projection`,
  becomes the classifier `head`, with a zero bias (as timm's OpenAI CLIP models): a
  model with `num_classes=projection_dim` outputs `image_embeds`, a headless
  one drops it.
- SigLIP: no class token, tanh-GELU, `post_layernorm` -> `norm` on all
  tokens, the attention-pooling head (`head.probe`, `head.attention` with its
  packed `in_proj` split into `q` and `kv`, `head.layernorm`, `head.mlp`) ->
  `attn_pool` (pooling="map"); without the head (`vision_use_head=False`),
  average pooling of the normalised tokens.
- DINOv2: LayerScale (`layer_scale{1,2}.lambda1` -> `ls{1,2}.gamma`), register
  tokens, the final `layernorm` -> `norm`; the mask token (used only for
  masked pre-training) is left out. With registers, the class token's
  position entry is added to the class token once, as timm stores these
  models (its position table then covers the patches only).

Which keras_vit output equals which `transformers` output (float32, within
1e-4 in tests/weights/test_hf_towers.py), with `num_classes=0`:

At another image size than the checkpoint's, the position table is resampled
once at load time the way `transformers` interpolates it at every call
(PyTorch bicubic, a=-0.75, no antialiasing; antialiased for DINOv2 with
registers; `interpolate_pos_encoding=True` for CLIP and SigLIP), so the
outputs still match.

- `pooler_output` is the model's output (`model(images)`, the "pooled" entry
  of `forward_intermediates`) for every tower.
- `last_hidden_state` is `forward_intermediates(images)["tokens"]` for SigLIP
  and DINOv2 (normalised tokens, `[class, registers..., patches]`), and
  `forward_intermediates(images)["blocks"][-1]` for CLIP, whose last hidden
  state comes before `post_layernorm`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

from keras_vit.layers.position import _cubic, resample_position_embeddings
from keras_vit.weights import formats, hf, hf_config, timm_keys
from keras_vit.weights.errors import CheckpointError, listing
from keras_vit.weights.safetensors_io import read_header, read_safetensors

FAMILIES = {"clip": "CLIP", "siglip": "SigLIP", "dinov2": "DINOv2"}
# config.json `model_type` -> family; composite (image-text) configs keep the tower under "vision_config".
MODEL_TYPES = {
    "clip": "clip",
    "clip_vision_model": "clip",
    "siglip": "siglip",
    "siglip_vision_model": "siglip",
    "dinov2": "dinov2",
    "dinov2_with_registers": "dinov2",
}
# transformers `hidden_act` -> keras_vit activation; only exact equivalents.
ACTIVATIONS = {
    "gelu": "gelu",
    "quick_gelu": "quick_gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}
_VISION_PREFIX = "vision_model."
_CLIP_LAYER = {  # CLIP and SigLIP encoder layers
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "self_attn.out_proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_CLIP_QKV = {"self_attn.q_proj": "query", "self_attn.k_proj": "key", "self_attn.v_proj": "value"}
_CLIP_SIMPLE = {
    "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
    "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
    "pre_layrnorm.weight": "norm_pre.weight",
    "pre_layrnorm.bias": "norm_pre.bias",
    "post_layernorm.weight": "norm.weight",
    "post_layernorm.bias": "norm.bias",
    "head.probe": "attn_pool.latent",
    "head.attention.out_proj.weight": "attn_pool.proj.weight",
    "head.attention.out_proj.bias": "attn_pool.proj.bias",
    "head.layernorm.weight": "attn_pool.norm.weight",
    "head.layernorm.bias": "attn_pool.norm.bias",
    "head.mlp.fc1.weight": "attn_pool.mlp.fc1.weight",
    "head.mlp.fc1.bias": "attn_pool.mlp.fc1.bias",
    "head.mlp.fc2.weight": "attn_pool.mlp.fc2.weight",
    "head.mlp.fc2.bias": "attn_pool.mlp.fc2.bias",
}
_DINO_LAYER = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.weights_in": "mlp.fc1",  # SwiGLU FFN (giant): gate first, as timm's packed GluMlp
    "mlp.weights_out": "mlp.fc2",
}
_DINO_QKV = {
    "attention.attention.query": "query",
    "attention.attention.key": "key",
    "attention.attention.value": "value",
}
_DINO_SIMPLE = {
    "embeddings.cls_token": "cls_token",
    "embeddings.register_tokens": "reg_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_DROPPED = ("embeddings.position_ids", "embeddings.mask_token")  # a buffer of older files; the MIM mask token


@dataclasses.dataclass
class Tower:
    """A Hugging Face vision tower read into timm keys.

    Attributes:
        family: "clip", "siglip" or "dinov2".
        path: the weights file.
        state: timm key -> array (PyTorch layouts).
        skipped: file keys outside the vision tower (an image-text model's text tower, projections).
        arch: `ViT` arguments from the `config.json` beside the file, or None without one.
        config_path: that `config.json`, or None.
    """

    family: str
    path: str
    state: dict[str, np.ndarray]
    skipped: list[str]
    arch: dict[str, Any] | None = None
    config_path: str | None = None


def family_of_keys(keys) -> str | None:
    """The tower family a state dict's key names belong to (after any `vision_model.` prefix), or None."""
    names = {k[len(_VISION_PREFIX) :] if k.startswith(_VISION_PREFIX) else k for k in keys}
    if "embeddings.class_embedding" in names:
        return "clip"
    if "embeddings.patch_embedding.weight" in names and "encoder.layers.0.self_attn.q_proj.weight" in names:
        return "siglip"
    if "encoder.layer.0.norm1.weight" in names or "encoder.layer.0.layer_scale1.lambda1" in names:
        return "dinov2"
    return None


def tower_to_timm(state: dict[str, np.ndarray], family: str, path: str = "<state>") -> tuple[dict, list[str]]:
    """Renames a tower's state dict to timm keys; returns `(timm state, skipped keys)`.

    Keys of a composite file outside `vision_model.` (text tower, its
    projection) are skipped; DINOv2's mask token and old files' `position_ids`
    are dropped; unknown tower keys keep their names, so the loader reports them.

    Raises:
        CheckpointError: a layer's q/k/v (or SigLIP's packed head projection) is incomplete or malformed.
    """
    state = timm_keys.strip_wrapper_prefix(state)
    composite = any(k.startswith(_VISION_PREFIX) for k in state)
    out: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    qkv: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    simple, layer_map, qkv_map = (
        (_DINO_SIMPLE, _DINO_LAYER, _DINO_QKV) if family == "dinov2" else (_CLIP_SIMPLE, _CLIP_LAYER, _CLIP_QKV)
    )
    layer_prefix = "encoder.layer." if family == "dinov2" else "encoder.layers."
    for key, value in state.items():
        if family == "clip" and key == "visual_projection.weight":  # image embeddings, as timm's OpenAI CLIP head
            out["head.weight"], out["head.bias"] = value, np.zeros(np.shape(value)[:1], np.asarray(value).dtype)
            continue
        if composite and not key.startswith(_VISION_PREFIX):
            skipped.append(key)
            continue
        name = key[len(_VISION_PREFIX) :] if composite else key
        if name in _DROPPED:
            continue
        if name in simple:
            out[simple[name]] = value
        elif family == "clip" and name == "embeddings.class_embedding":
            out["cls_token"] = np.reshape(value, (1, 1, -1))
        elif family != "dinov2" and name == "embeddings.position_embedding.weight":
            out["pos_embed"] = np.expand_dims(value, 0)
        elif family == "siglip" and name.startswith("head.attention.in_proj_"):
            out.update(_split_in_proj(value, name.rsplit("_", 1)[-1], path))
        elif name.startswith(layer_prefix) and name.count(".") >= 3:
            index, rest = name[len(layer_prefix) :].split(".", 1)
            part, kind = rest.rsplit(".", 1)
            if part in qkv_map and index.isdigit():
                qkv.setdefault((int(index), kind), {})[qkv_map[part]] = value
            elif part in ("layer_scale1", "layer_scale2") and index.isdigit():
                out[f"blocks.{index}.ls{part[-1]}.gamma"] = value
            elif part in layer_map and index.isdigit():
                out[f"blocks.{index}.{layer_map[part]}.{kind}"] = value
            else:
                out[name] = value
        else:
            out[name] = value
    for (index, kind), parts in qkv.items():
        out[f"blocks.{index}.attn.qkv.{kind}"] = hf.fuse_qkv(parts, index, kind, path)
    if family == "dinov2" and "reg_token" in out and "cls_token" in out and np.ndim(out.get("pos_embed")) == 3:
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]  # timm's layout: no class position entry
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return out, skipped


def _split_in_proj(value: np.ndarray, kind: str, path: str) -> dict[str, np.ndarray]:
    """SigLIP's `nn.MultiheadAttention` packed projection (rows q, k, v) as timm's `q` and fused `kv`."""
    if np.ndim(value) not in (1, 2) or np.shape(value)[0] % 3:
        raise CheckpointError(
            f"'{path}': head.attention.in_proj_{kind} has shape {np.shape(value)}; a packed q/k/v projection "
            "has 3 x width rows. The file is corrupt."
        )
    width = np.shape(value)[0] // 3
    return {f"attn_pool.q.{kind}": value[:width], f"attn_pool.kv.{kind}": value[width:]}


def vision_config(config: dict[str, Any]) -> dict[str, Any]:
    """The vision tower's config: `vision_config` of a CLIP/SigLIP image-text config, else the config itself."""
    nested = config.get("vision_config")
    return nested if config.get("model_type") in ("clip", "siglip") and isinstance(nested, dict) else config


def _activation(config: dict[str, Any], default: str) -> str:
    act = config.get("hidden_act", default)
    if act not in ACTIVATIONS:
        raise ValueError(
            f"keras_vit has no exact equivalent of hidden_act={act!r}; outputs would differ. "
            f"Supported: {sorted(ACTIVATIONS)}. Received: hidden_act={act!r}"
        )
    return ACTIVATIONS[act]


def arch_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """keras_vit `ViT` arguments of a Hugging Face vision tower's `config.json` (as transformers fills defaults).

    Args:
        config: the parsed `config.json` of a CLIP/SigLIP (vision or image-text) or DINOv2 model.

    Returns:
        Keyword arguments for `keras_vit.ViT`, headless (`num_classes=0`).

    Raises:
        ValueError: another model type, or an activation keras_vit cannot reproduce exactly.
    """
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"Not a Hugging Face CLIP, SigLIP or DINOv2 config. Supported model_type values: "
            f"{sorted(MODEL_TYPES)}. Received: model_type={model_type!r}"
        )
    family, config = MODEL_TYPES[model_type], vision_config(config)
    dinov2 = family == "dinov2"
    hidden = int(config.get("hidden_size", 768))
    arch: dict[str, Any] = dict(
        image_size=int(config.get("image_size", 518 if dinov2 else 224)),
        patch_size=int(config.get("patch_size", {"clip": 32, "siglip": 16, "dinov2": 14}[family])),
        num_channels=int(config.get("num_channels", 3)),
        hidden_dim=hidden,
        depth=int(config.get("num_hidden_layers", 12)),
        num_heads=int(config.get("num_attention_heads", 12)),
        layer_norm_epsilon=float(config.get("layer_norm_eps", 1e-5 if family == "clip" else 1e-6)),
        num_classes=0,
    )
    if family == "clip":
        return dict(
            arch,
            mlp_dim=int(config.get("intermediate_size", 3072)),
            pre_norm=True,
            patch_bias=False,
            activation=_activation(config, "quick_gelu"),
        )
    if family == "siglip":
        arch.update(mlp_dim=int(config.get("intermediate_size", 3072)), class_token=False)
        arch["activation"] = _activation(config, "gelu_pytorch_tanh")
        if config.get("vision_use_head", True):
            return dict(arch, pooling="map")
        return dict(arch, pooling="avg", fc_norm=False)  # transformers' tokens are normalised before pooling
    registers = int(config.get("num_register_tokens", 4 if model_type == "dinov2_with_registers" else 0))
    arch.update(
        qkv_bias=bool(config.get("qkv_bias", True)),
        layer_scale_init=float(config.get("layerscale_value", 1.0)),
        num_register_tokens=registers,
        pos_embed_prefix=registers == 0,  # with registers the class position entry is folded into the token
    )
    hidden_features = int(hidden * float(config.get("mlp_ratio", 4)))
    if config.get("use_swiglu_ffn", False):
        # transformers' Dinov2SwiGLUFFN gates 2/3 of the width, rounded up to 8; mlp_dim is the packed fc1 (2x that)
        gated = (hidden_features * 2 // 3 + 7) // 8 * 8
        return dict(arch, mlp_dim=2 * gated, mlp_kind="swiglu_packed", activation="silu")
    activation = _activation(config, "gelu")
    return dict(arch, mlp_dim=hidden_features, **({} if activation == "gelu" else {"activation": activation}))


def arch_from_hf_config(config: dict[str, Any]) -> dict[str, Any]:
    """keras_vit `ViT` arguments of any supported Hugging Face `config.json`: ViT, DeiT, CLIP, SigLIP, DINOv2.

    Args:
        config: the parsed `config.json`.

    Returns:
        Keyword arguments for `keras_vit.ViT`.

    Examples:
        >>> config = json.load(open("dinov2-small/config.json"))
        >>> model = keras_vit.ViT(**keras_vit.weights.arch_from_hf_config(config), weights="dinov2-small")
    """
    if config.get("model_type") in MODEL_TYPES:
        return arch_from_config(config)
    if config.get("model_type", "vit") in ("vit", "deit"):
        return hf.arch_from_hf_config(config)
    supported = sorted({"vit", "deit", *MODEL_TYPES})
    raise ValueError(
        f"keras_vit reads Hugging Face configs of model_type {supported}. Received: model_type={config['model_type']!r}"
    )


def read_tower(path: str) -> Tower | None:
    """Reads a Hugging Face vision tower (and its `config.json`, if beside it); None for any other checkpoint.

    Only the safetensors header is read to decide, so other checkpoints cost
    nothing more. The parts of an image-text file outside its vision tower
    are left out, with a warning.

    Raises:
        CheckpointError: the config describes another model than the file holds, or is invalid.
    """
    if formats.detect_format(path) != formats.SAFETENSORS:
        return None
    header, _, _ = read_header(path)
    family = family_of_keys(timm_keys.strip_wrapper_prefix(dict.fromkeys(k for k in header if k != "__metadata__")))
    if family is None:
        return None
    tensors, _ = read_safetensors(path)
    state, skipped = tower_to_timm(tensors, family, path)
    tower = Tower(family, path, state, skipped)
    tower.config_path = hf_config.config_beside(path)
    if tower.config_path is not None:
        config = hf_config.read_hf_config(tower.config_path)
        declared = MODEL_TYPES.get(config.get("model_type"))
        if declared != family:
            raise CheckpointError(
                f"'{tower.config_path}' describes a {config.get('model_type')!r} model, but '{path}' beside it holds "
                f"a {FAMILIES[family]} vision tower; nothing was loaded. Keep each checkpoint with the config.json "
                "it was saved with."
            )
        try:
            tower.arch = arch_from_config(config)
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"'{tower.config_path}': {error}") from None
        check_state(tower)
    if skipped:
        warnings.warn(
            f"Loading the {FAMILIES[family]} vision tower of '{path}'; not part of it and left out: {_short(skipped)}.",
            stacklevel=4,
        )
    return tower


def check_state(tower: Tower) -> None:
    """Refuses a config.json that does not describe the tensors beside it (naming both values)."""
    state, arch = tower.state, tower.arch
    found: dict[str, Any] = {}
    proj = state.get("patch_embed.proj.weight")
    if np.ndim(proj) == 4:
        found["hidden_dim"], found["num_channels"] = int(proj.shape[0]), int(proj.shape[1])
        found["patch_size"] = int(proj.shape[2])
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if blocks:
        found["depth"] = max(blocks) + 1
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if np.ndim(fc1) == 2:
        found["mlp_dim"] = int(fc1.shape[0])
    if "reg_token" in state or arch.get("num_register_tokens"):
        found["num_register_tokens"] = int(np.shape(state["reg_token"])[1]) if "reg_token" in state else 0
    pos_embed = state.get("pos_embed")
    if np.ndim(pos_embed) == 3:
        patches = (arch["image_size"] // arch["patch_size"]) ** 2
        prefix = int(arch.get("class_token", True)) if arch.get("pos_embed_prefix", True) else 0
        found["image_size"] = pos_embed.shape[1] - prefix
        arch = dict(arch, image_size=patches)  # compared as patch counts
    wrong = [f"{name}: config {arch[name]!r}, file {value!r}" for name, value in found.items() if arch[name] != value]
    if wrong:
        raise CheckpointError(
            "\n".join(
                [
                    f"'{tower.config_path}' does not describe the checkpoint '{tower.path}' beside it "
                    "(image_size compared as position-table patches); nothing was loaded.",
                    listing("disagreements", wrong),
                    "Keep each checkpoint with the config.json it was saved with.",
                ]
            )
        )


# Arguments the model may differ in: position tables are resampled, heads and epsilon adopted by the loader.
_ADAPTABLE = ("image_size", "num_classes", "layer_norm_epsilon")


def check_model(model, tower: Tower) -> None:
    """Refuses a model that is not the tower's architecture, naming what the checkpoint holds and what the model has.

    Image size and class count may differ (position table resampled, fresh
    head); the LayerNorm epsilon is adopted from the config.
    """
    ours = getattr(model, "config", None)
    if tower.arch is None or ours is None or not hasattr(ours, "hidden_dim"):
        return  # without a config (or a plain Keras model) the tensor shapes are checked instead
    absent = object()
    clashes = []
    for name, expected in tower.arch.items():
        if name in _ADAPTABLE:
            continue
        actual = getattr(ours, name, absent)
        if name == "layer_scale_init" and actual is not absent:  # its value only initialises: compare on/off
            expected, actual = expected is not None, actual is not None
        if actual is absent:
            clashes.append(f"{name}={expected!r} in the checkpoint, but the model has no {name} argument")
        elif _normal(actual) != _normal(expected):
            clashes.append(f"{name}={expected!r} in the checkpoint, but the model has {name}={actual!r}")
    if clashes:
        label = FAMILIES[tower.family]
        raise CheckpointError(
            "\n".join(
                [
                    f"Model '{model.name}' is not the {label} vision tower in '{tower.path}' "
                    f"(described by '{tower.config_path}'); nothing was loaded.",
                    listing("contradictions", clashes),
                    "Build the tower's architecture: keras_vit.ViT(**keras_vit.weights.arch_from_hf_config(config), "
                    "weights=path) with the parsed config.json; pass only image_size or num_classes to change it.",
                ]
            )
        )


def _normal(value):
    """Compares ints, floats and (h, w) pairs alike: a square pair equals its side."""
    if isinstance(value, list | tuple | np.ndarray):
        values = tuple(int(v) for v in value)
        return values[0] if len(set(values)) == 1 else values
    return value


def _short(keys: list[str], limit: int = 4) -> str:
    groups = sorted({k.split(".")[0] for k in keys})
    shown = ", ".join(groups[:limit]) + (", ..." if len(groups) > limit else "")
    return f"{len(keys)} tensors ({shown})"


def resample_position_table(model, tower: Tower) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Resamples `tower.state["pos_embed"]` to the model's patch grid as `transformers` interpolates it.

    Returns:
        `(old_grid, new_grid)` when it resampled, else None (same grid, or a
        table that does not fit the model: the loader reports that).
    """
    table = tower.state.get("pos_embed")
    layer = next((layer for layer in model.layers if layer.name == "pos_embed"), None)
    if np.ndim(table) != 3 or not hasattr(layer, "grid_size"):
        return None
    prefix, grid = int(layer.num_prefix_tokens), tuple(int(g) for g in layer.grid_size)
    side = math.isqrt(max(table.shape[1] - prefix, 0))
    if side == 0 or side * side != table.shape[1] - prefix or (side, side) == grid:
        return None
    if "reg_token" in tower.state:  # transformers' DINOv2 with registers antialiases, as timm does
        tower.state["pos_embed"] = resample_position_embeddings(table, (side, side), grid, prefix)
    else:
        patches = table[:, prefix:].reshape(table.shape[0], side, side, -1).astype(np.float64)
        patches = np.einsum("ih,bhwd,jw->bijd", _torch_bicubic(side, grid[0]), patches, _torch_bicubic(side, grid[1]))
        patches = patches.reshape(table.shape[0], grid[0] * grid[1], -1).astype(table.dtype)
        tower.state["pos_embed"] = np.concatenate([table[:, :prefix], patches], axis=1)
    warnings.warn(
        f"Resampling the position embedding from a {side}x{side} to a {grid[0]}x{grid[1]} patch grid "
        "(bicubic, as transformers interpolates it).",
        stacklevel=4,
    )
    return (side, side), grid


def _torch_bicubic(in_size: int, out_size: int, a: float = -0.75) -> np.ndarray:
    """`(out_size, in_size)` matrix of `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`.

    Four taps around the half-pixel-centred source position, indices clamped to the border, no antialiasing.
    """
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    scale = in_size / out_size
    for i in range(out_size):
        source = (i + 0.5) * scale - 0.5
        base = math.floor(source)
        for offset in range(-1, 3):
            matrix[i, min(max(base + offset, 0), in_size - 1)] += _cubic(np.float64(offset - (source - base)), a)
    return matrix
