"""EVA: the ViT family with rotary position embeddings (timm's `Eva` class) as a functional `keras.Model`.

One constructor covers EVA-01/02, DINOv3, ROPE-ViT, Perception Encoder and the
timm "rope_reg" models through its arguments. It is a `ViT` subclass so that
loading, resizing, recipe hooks and export treat it as one; its graph and
config are its own. Layer names follow timm so checkpoints map one to one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_vit import layers as vit_layers
from keras_vit.layers.eva_blocks import MLP_KINDS, NORMS, EvaBlock, EvaBlockPostNorm
from keras_vit.layers.normalization import make_norm
from keras_vit.layers.pooling import AttentionPoolLatent
from keras_vit.layers.rope import GRID_INDEXING, AxialRotaryEmbedding, MixedRotaryEmbedding
from keras_vit.models.vit import ViT, _walk_layers
from keras_vit.validation import check_choice, check_positive_int, check_rate

ROPE_KINDS = ("none", "axial", "centered", "mixed")
EVA_POOLING = ("token", "avg", "map")


@dataclasses.dataclass
class EVAConfig:
    """Architecture arguments of `EVA`; see `EVA` for their meaning. Validated on creation."""

    image_size: Any = 224
    patch_size: Any = 16
    num_channels: int = 3
    hidden_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    num_kv_heads: Any = None
    mlp_dim: int = 3072
    mlp_kind: str = "mlp"
    mlp_inner_norm: bool = False
    qkv_bias: bool = True
    key_bias: bool = False
    qkv_fused: bool = True
    qk_norm: bool = False
    attn_inner_norm: bool = False
    norm: str = "layer"
    layer_norm_epsilon: float = 1e-6
    layer_scale_init: float | None = None
    attn_only_layer_scale: bool = False
    post_norm_blocks: bool = False
    class_token: bool = True
    num_register_tokens: int = 0
    position_embedding: str = "learned"
    pos_embed_prefix: bool = True
    patch_bias: bool = True
    pre_norm: bool = False
    final_norm: bool | None = None
    fc_norm: bool | None = None
    pooling: str = "avg"
    pool_num_heads: int | None = None
    pool_mlp_ratio: float | None = None
    rope: str = "none"
    rope_temperature: float = 10000.0
    rope_grid_offset: float = 0.0
    rope_grid_indexing: str = "ij"
    rope_ref_feat_shape: Any = None
    rope_rotate_half: bool = False
    dynamic_image_size: bool = False
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    num_classes: int = 1000

    def __post_init__(self):
        self.image_size = vit_layers.embeddings.to_pair(self.image_size, "image_size")
        self.patch_size = vit_layers.embeddings.to_pair(self.patch_size, "patch_size")
        if self.rope_ref_feat_shape is not None:
            self.rope_ref_feat_shape = vit_layers.embeddings.to_pair(self.rope_ref_feat_shape, "rope_ref_feat_shape")
        if isinstance(self.num_kv_heads, list):
            self.num_kv_heads = tuple(self.num_kv_heads)
        self.validate()

    def validate(self) -> None:
        """Raises `ValueError` naming the bad value and the fix."""
        for field in ("num_channels", "hidden_dim", "depth", "num_heads", "mlp_dim"):
            check_positive_int(getattr(self, field), field)
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"`hidden_dim` must be divisible by `num_heads`. Received: hidden_dim={self.hidden_dim}, "
                f"num_heads={self.num_heads}"
            )
        for axis, size, patch in zip(("height", "width"), self.image_size, self.patch_size):
            if size % patch:
                raise ValueError(
                    f"Image {axis} {size} is not divisible by patch size {patch}. Received: "
                    f"image_size={self.image_size}, patch_size={self.patch_size}"
                )
        if isinstance(self.num_kv_heads, tuple) and len(self.num_kv_heads) != self.depth:
            raise ValueError(
                f"`num_kv_heads` given per block needs one entry per block ({self.depth}). "
                f"Received: num_kv_heads={self.num_kv_heads}"
            )
        check_choice(self.mlp_kind, "mlp_kind", MLP_KINDS)
        check_choice(self.norm, "norm", NORMS)
        check_choice(self.pooling, "pooling", EVA_POOLING)
        check_choice(self.rope, "rope", ROPE_KINDS)
        check_choice(self.rope_grid_indexing, "rope_grid_indexing", GRID_INDEXING)
        check_choice(self.position_embedding, "position_embedding", ("learned", "none"))
        for field in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
            check_rate(getattr(self, field), field)
        if self.pooling == "token" and not self.class_token:
            raise ValueError("`pooling='token'` needs a class token. Set class_token=True or pooling='avg'.")
        if self.rope == "mixed" and self.rope_rotate_half:
            raise ValueError("Mixed rotary embeddings use the interleaved layout. Set rope_rotate_half=False.")
        if self.rope != "none" and (self.hidden_dim // self.num_heads) % 4:
            raise ValueError(
                f"Rotary embeddings need a head width divisible by 4. Received: hidden_dim={self.hidden_dim}, "
                f"num_heads={self.num_heads}"
            )
        if self.post_norm_blocks and (self.qk_norm or self.attn_only_layer_scale or self.layer_scale_init):
            raise ValueError("Post-norm blocks take no qk_norm or LayerScale. Set post_norm_blocks=False.")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(f"`num_classes` must be an int >= 0. Received: num_classes={self.num_classes!r}")

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.num_register_tokens

    @property
    def use_fc_norm(self) -> bool:
        return self.pooling == "avg" if self.fc_norm is None else bool(self.fc_norm)

    @property
    def use_final_norm(self) -> bool:
        return (not self.use_fc_norm) if self.final_norm is None else bool(self.final_norm)

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    def kv_heads(self, block: int) -> int:
        heads = self.num_kv_heads[block] if isinstance(self.num_kv_heads, tuple) else self.num_kv_heads
        return heads or self.num_heads

    def to_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self)
        for field in ("image_size", "patch_size", "rope_ref_feat_shape", "num_kv_heads"):
            if isinstance(config[field], tuple):
                config[field] = list(config[field])
        return config


def eva_config(arch: dict[str, Any]) -> EVAConfig:
    """`EVAConfig(**arch)`, naming any unknown argument and the valid ones."""
    valid = [f.name for f in dataclasses.fields(EVAConfig)]
    unknown = set(arch) - set(valid)
    if unknown:
        raise ValueError(f"Unknown EVA argument(s) {sorted(unknown)}. Valid: {valid}")
    return EVAConfig(**arch)


def _norm_count(c: EVAConfig, width: int) -> int:
    return width if c.norm == "rms" else 2 * width


def eva_param_count(c: EVAConfig) -> int:
    """Exact number of parameters of an `EVA` built from `c`, without building it (timm's count too)."""
    d, hd = c.hidden_dim, c.head_dim
    ph, pw = c.patch_size
    gh, gw = c.grid_size
    count = ph * pw * c.num_channels * d + (d if c.patch_bias else 0) + c.num_prefix_tokens * d
    if c.position_embedding == "learned":
        count += (gh * gw + (c.num_prefix_tokens if c.pos_embed_prefix else 0)) * d
    if c.rope == "mixed":
        count += 2 * c.depth * c.num_heads * hd // 2
    count += _norm_count(c, d) if c.pre_norm else 0
    for block in range(c.depth):
        kv = c.kv_heads(block) * hd
        count += 2 * _norm_count(c, d) + d * d + d  # norm1, norm2, proj
        count += d * (d + 2 * kv)  # q, k, v
        if c.qkv_bias:
            count += d + kv + (kv if c.key_bias else 0)
        count += 2 * _norm_count(c, hd) if c.qk_norm else 0
        count += _norm_count(c, d) if c.attn_inner_norm else 0
        h = c.mlp_dim
        fc1 = 2 * h if c.mlp_kind != "mlp" else h
        count += d * fc1 + fc1 + h * d + d + (_norm_count(c, h) if c.mlp_inner_norm else 0)
        if c.layer_scale_init is not None:
            count += d if c.attn_only_layer_scale else 2 * d
    count += _norm_count(c, d) * (int(c.use_final_norm) + int(c.use_fc_norm))
    if c.pooling == "map":
        hidden = int(d * (c.pool_mlp_ratio or 4.0))
        count += (
            d + d * d + d + d * 2 * d + 2 * d + d * d + d + _norm_count(c, d) + d * hidden + hidden + hidden * d + d
        )
    if c.num_classes:
        count += d * c.num_classes + c.num_classes
    return count


@keras.saving.register_keras_serializable(package="keras_vit")
class EVA(ViT):
    """EVA-style Vision Transformer with 2D rotary position embeddings (timm's `Eva`).

    EVA (Fang et al. 2022, https://arxiv.org/abs/2211.07636), EVA-02
    (https://arxiv.org/abs/2303.11331), DINOv3 (https://arxiv.org/abs/2508.10104),
    ROPE-ViT (https://arxiv.org/abs/2403.13298), Perception Encoder
    (https://arxiv.org/abs/2504.13181). Built by name or from arguments:

        keras_vit.EVA("eva02_tiny_patch14_224", num_classes=10)
        keras_vit.EVA(image_size=64, patch_size=8, hidden_dim=128, depth=4, num_heads=4, mlp_dim=256,
                      rope="axial", num_classes=10)

    Args:
        variant: str or None. A registered EVA name (see `keras_vit.list_models()`).
        image_size: int or (int, int). As in `ViT`, like patch_size, num_channels,
            hidden_dim, depth, num_heads, mlp_dim, qkv_bias, qk_norm, dropout_rate,
            attention_dropout_rate, drop_path_rate, layer_scale_init, class_token,
            num_register_tokens, position_embedding ("learned" or "none"),
            pos_embed_prefix, fc_norm, num_classes and layer_norm_epsilon.
        num_kv_heads: int, per-block tuple or None. Key/value heads (grouped-query attention).
        mlp_kind: "mlp" (GELU), "swiglu" or "swiglu_packed". `mlp_dim` is the MLP width
            (the gated product's for SwiGLU).
        mlp_inner_norm: bool. Norm inside the MLP (EVA-02 scale_mlp).
        key_bias: bool. Keys get a bias too (timm's `attn_type="rope"`); EVA's own attention has none.
        qkv_fused: bool. One `qkv` projection, else `q_proj`/`k_proj`/`v_proj`.
        attn_inner_norm: bool. Norm before the attention output projection (scale_attn_inner).
        norm: "layer" or "rms". Every norm of the model.
        attn_only_layer_scale: bool. LayerScale on the attention branch only.
        post_norm_blocks: bool. Post-norm blocks (EVA-02 enormous).
        patch_bias: bool. Bias in the patch projection (False for PE).
        pre_norm: bool. Norm before the blocks (`norm_pre`, CLIP/PE).
        final_norm: bool or None. Norm after the blocks; None: when there is no fc_norm.
        pooling: "avg" (patch tokens), "token" (class token) or "map" (attention pool `attn_pool`).
        pool_num_heads, pool_mlp_ratio: MAP head shape; None takes num_heads and 4.
        rope: "none", "axial" (EVA-02, ROPE-ViT axial), "centered" (DINOv3) or "mixed" (ROPE-ViT mixed).
        rope_temperature: float. Frequency base; it, rope_grid_offset, rope_grid_indexing,
            rope_ref_feat_shape and rope_rotate_half are described in `keras_vit.layers.rope`.
        dynamic_image_size: bool. Accept any image size divisible by the patch size: rotary tables follow the
            grid, and a learned position table is resampled to it in the graph (timm's `dynamic_img_size`).
        name, dtype, weights: as in `ViT` (weights: a timm `Eva` `.safetensors` file or catalogued name).

    Call arguments:
        images: float `(batch, height, width, num_channels)`, normalised.

    Returns:
        Logits `(batch, num_classes)` (float32), or features `(batch, dim)` when `num_classes=0`.

    Examples:
        >>> model = keras_vit.EVA("eva02_tiny_patch14_224", num_classes=10)
        >>> model(np.zeros((2, 224, 224, 3), "float32")).shape
        TensorShape([2, 10])
        >>> maps = model.forward_intermediates(images, indices=2, output_fmt="NHWC")["blocks"]
    """

    def __init__(
        self, variant: str | None = None, /, *, name: str | None = None, dtype=None, weights: str | None = None, **arch
    ):
        if variant is not None:
            from keras_vit.models.registry import model_spec

            spec = model_spec(variant)
            if spec.family not in EVA_FAMILIES:
                raise ValueError(
                    f"{variant!r} is a {spec.family!r} model, not an EVA one. Use keras_vit.create_model({variant!r})."
                )
            arch = dict(spec.arch, **arch)
        config = eva_config(arch)
        made = _make_layers(config, dtype)
        images = keras.Input(
            (None, None, config.num_channels)
            if config.dynamic_image_size
            else (*config.image_size, config.num_channels),
            name="images",
        )
        outputs = _forward(config, made, images, with_attention=False)
        # ViT's parent (the functional Model), not ViT's own graph builder.
        super(ViT, self).__init__(
            inputs=images, outputs=outputs.get("logits", outputs["pooled"]), name=name or variant or "eva", dtype=dtype
        )
        self.variant = variant
        self.config = config
        self.input_spec = None
        if weights is not None:
            self.load_pretrained(weights)

    def intermediate_model(self) -> keras.Model:
        """A model on the same layers returning every block's tokens and attention weights.

        Outputs a dict: "blocks", "attention", "tokens", "pooled" and, with a
        head, "logits"; token order `[class, registers..., patches]`.
        """
        return _EvaIntermediates(self)

    def _check_input(self, images) -> None:
        check_eva_images(images, self.config)

    def feature_extractor(self) -> keras.Model:
        """A model on the same layers returning the pooled embedding the head sees (MAP head included)."""
        layer = "fc_norm" if self.config.use_fc_norm else ("attn_pool" if self.config.pooling == "map" else "pool")
        return keras.Model(self.input, self.get_layer(layer).output, name=f"{self.name}_features")

    @property
    def checkpoint_keys(self):
        """The key map between this model's variables and timm `Eva` checkpoints (`keras_vit.weights` uses it)."""
        from keras_vit.weights import timm_eva_keys

        return timm_eva_keys

    def heads_model(self) -> keras.Model:
        raise ValueError("EVA models have one head; heads_model() is for distilled DeiT models.")

    def no_weight_decay_variables(self) -> list:
        """ViT's list plus the mixed rotary frequencies (timm excludes `rope.freqs`)."""
        extra = {
            id(v)
            for layer in _walk_layers(self)
            if isinstance(layer, MixedRotaryEmbedding)
            for v in layer.trainable_variables
        }
        chosen = {id(v) for v in super().no_weight_decay_variables()} | extra
        return [v for v in self.trainable_variables if id(v) in chosen]

    def layer_groups(self) -> list[list]:
        """Trainable variables by depth: embeddings (and `norm_pre`, rope) first, block i in i+1, head last."""
        groups = [[] for _ in range(self.config.depth + 2)]
        for layer in self.layers:
            if layer.name.startswith("block_"):
                index = int(layer.name.split("_")[1]) + 1
            elif layer.name in ("patch_embed", "prefix_tokens", "pos_embed", "norm_pre", "rope"):
                index = 0
            else:
                index = self.config.depth + 1
            groups[index].extend(layer.trainable_variables)
        return groups


EVA_FAMILIES = ("eva", "eva02", "dinov3", "rope_vit", "pe")


def check_eva_images(images, config: EVAConfig) -> None:
    """Clear `ValueError`s for a batch that does not fit; any multiple of the patch size with dynamic_image_size."""
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(
            f"Expected images of rank 4 (batch, height, width, channels), received shape {shape}. "
            "Add a batch axis with images[None] for a single image."
        )
    if shape[3] is not None and shape[3] != config.num_channels:
        raise ValueError(f"Expected {config.num_channels} channels (channels-last), received shape {shape}.")
    size = tuple(shape[1:3])
    if None in size:
        return
    if config.dynamic_image_size:
        if size[0] % config.patch_size[0] or size[1] % config.patch_size[1]:
            raise ValueError(
                f"Image size {size} is not a multiple of the patch size {config.patch_size}. Resize or crop."
            )
    elif size != config.image_size:
        raise ValueError(
            f"Expected images of size {config.image_size}, received {size}. Resize the images, or use "
            f"model.with_image_size({size})."
        )


class _EvaIntermediates(keras.Model):
    """`EVA.intermediate_model()`: the EVA's own layers run with attention weights requested."""

    def __init__(self, eva: EVA):
        super().__init__(name=f"{eva.name}_intermediates")
        self.eva_config = eva.config
        self.eva_layers = {layer.name: layer for layer in eva.layers if not isinstance(layer, keras.layers.InputLayer)}
        size = (None, None) if eva.config.dynamic_image_size else eva.config.image_size
        self.build((None, *size, eva.config.num_channels))

    def call(self, images, training=None):
        return _forward(self.eva_config, self.eva_layers, images, with_attention=True)


def _make_layers(c: EVAConfig, dtype) -> dict[str, keras.layers.Layer]:
    """Every layer of the model, by name (timm's names), in forward order."""
    made = {
        "patch_embed": vit_layers.PatchEmbedding(
            c.patch_size, c.hidden_dim, use_bias=c.patch_bias, name="patch_embed", dtype=dtype
        ),
        "prefix_tokens": vit_layers.PrefixTokens(
            c.class_token, False, c.num_register_tokens, name="prefix_tokens", dtype=dtype
        ),
    }
    if c.position_embedding == "learned":
        prefix = c.num_prefix_tokens if c.pos_embed_prefix else 0
        dynamic = c.patch_size if c.dynamic_image_size else None
        made["pos_embed"] = vit_layers.PositionEmbedding(
            c.grid_size, prefix, patch_size=dynamic, name="pos_embed", dtype=dtype
        )
    if c.rope == "mixed":
        made["rope"] = MixedRotaryEmbedding(
            c.head_dim,
            c.depth,
            c.num_heads,
            c.patch_size,
            c.rope_temperature,
            c.rope_grid_indexing,
            name="rope",
            dtype=dtype,
        )
    elif c.rope != "none":
        made["rope"] = AxialRotaryEmbedding(
            c.head_dim,
            c.patch_size,
            temperature=c.rope_temperature,
            grid_type="centered" if c.rope == "centered" else "index",
            grid_offset=c.rope_grid_offset,
            grid_indexing=c.rope_grid_indexing,
            ref_feat_shape=c.rope_ref_feat_shape,
            rotate_half=c.rope_rotate_half,
            name="rope",
            dtype=dtype,
        )
    made["pos_drop"] = keras.layers.Dropout(c.dropout_rate, name="pos_drop", dtype=dtype)
    if c.pre_norm:
        made["norm_pre"] = make_norm(c.norm, c.layer_norm_epsilon, "norm_pre", dtype)
    rates = np.linspace(0.0, c.drop_path_rate, c.depth) if c.depth > 1 else [c.drop_path_rate]
    block_class = EvaBlockPostNorm if c.post_norm_blocks else EvaBlock
    for i in range(c.depth):
        made[f"block_{i}"] = block_class(
            c.num_heads,
            c.mlp_dim,
            mlp_kind=c.mlp_kind,
            mlp_inner_norm=c.mlp_inner_norm,
            layer_scale_init=c.layer_scale_init,
            attn_only_layer_scale=c.attn_only_layer_scale,
            drop_path_rate=float(rates[i]),
            norm=c.norm,
            norm_epsilon=c.layer_norm_epsilon,
            num_kv_heads=c.kv_heads(i) if c.kv_heads(i) != c.num_heads else None,
            qkv_bias=c.qkv_bias,
            key_bias=c.key_bias,
            qkv_fused=c.qkv_fused,
            qk_norm=c.qk_norm,
            inner_norm=c.attn_inner_norm,
            num_prefix_tokens=c.num_prefix_tokens,
            rotate_half=c.rope_rotate_half,
            attention_dropout_rate=c.attention_dropout_rate,
            dropout_rate=c.dropout_rate,
            name=f"block_{i}",
            dtype=dtype,
        )
    if c.use_final_norm:
        made["norm"] = make_norm(c.norm, c.layer_norm_epsilon, "norm", dtype)
    if c.pooling == "map":
        made["attn_pool"] = AttentionPoolLatent(
            c.pool_num_heads or c.num_heads,
            mlp_ratio=c.pool_mlp_ratio or 4.0,
            norm=c.norm,
            norm_epsilon=c.layer_norm_epsilon,
            name="attn_pool",
            dtype=dtype,
        )
    else:
        mode = "token" if c.pooling == "token" else "gap"
        made["pool"] = vit_layers.TokenPooling(mode, c.num_prefix_tokens, name="pool", dtype=dtype)
    if c.use_fc_norm:
        made["fc_norm"] = make_norm(c.norm, c.layer_norm_epsilon, "fc_norm", dtype)
    made["head_drop"] = keras.layers.Dropout(c.dropout_rate, name="head_drop", dtype=dtype)
    if c.num_classes:
        made["head"] = keras.layers.Dense(c.num_classes, kernel_initializer="zeros", name="head", dtype="float32")
    return made


def _forward(c: EVAConfig, layer: dict, images, with_attention: bool) -> dict[str, Any]:
    """Runs `images` through the layers; every intermediate the model offers, by name."""
    x = layer["patch_embed"](images)
    # A dynamic table is resampled to the images' patch grid in the graph (timm's dynamic_img_size).
    grid_of = dict(images=images) if c.dynamic_image_size else {}
    if "pos_embed" in layer and c.pos_embed_prefix:
        x = layer["pos_embed"](layer["prefix_tokens"](x), **grid_of)
    else:
        x = layer["prefix_tokens"](layer["pos_embed"](x, **grid_of) if "pos_embed" in layer else x)
    x = layer["pos_drop"](x)
    if c.pre_norm:
        x = layer["norm_pre"](x)
    rope = layer["rope"](images) if c.rope not in ("none", "mixed") else None
    blocks, attention = [], []
    for i in range(c.depth):
        block_rope = layer["rope"](images, block_index=i) if c.rope == "mixed" else rope
        x = layer[f"block_{i}"](x, rope=block_rope, return_attention_scores=with_attention)
        if with_attention:
            x, weights = x
            attention.append(weights)
        blocks.append(x)
    tokens = layer["norm"](x) if c.use_final_norm else x
    pooled = layer["attn_pool"](tokens) if c.pooling == "map" else layer["pool"](tokens)
    if c.use_fc_norm:
        pooled = layer["fc_norm"](pooled)
    outputs = {"blocks": blocks, "attention": attention, "tokens": tokens, "pooled": pooled}
    if c.num_classes:
        outputs["logits"] = layer["head"](layer["head_drop"](pooled))
    return outputs
