"""BEiT (Bao et al. 2021, BEiT v2 Peng et al. 2022) as a functional `keras.Model`: timm's `Beit` class.

A ViT whose blocks carry their own learned relative position bias instead of
an absolute position embedding, whose attention has query and value biases
but no key bias, with LayerScale and mean pooling plus `fc_norm` for the
classifier. It shares `ViT`'s conventions (config dataclass, variants by name,
`load_pretrained`, features, resizing, recipe hooks) and helpers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_vit import layers as vit_layers
from keras_vit.layers.beit_blocks import (
    BeitBlock,
    BeitRelativePositionBias,
    relative_position_table_size,
    resize_relative_position_table,
)
from keras_vit.layers.pooling import POOLING_MODES
from keras_vit.models._arch import block_indices, check_arch_names, from_variant_config
from keras_vit.models.registry import ModelSpec
from keras_vit.models.timm_beit_variants import BEIT_VARIANTS
from keras_vit.models.vit import _walk_layers, check_images
from keras_vit.validation import check_choice, check_positive_int, check_rate, to_pair

BEIT_POSITION_EMBEDDINGS = ("none", "learned")
OUTPUT_FORMATS = ("NLC", "NHWC")


@dataclasses.dataclass
class BEiTConfig:
    """Architecture arguments of `BEiT`; see `BEiT` for their meaning. Validated on creation.

    Examples:
        >>> keras_vit.BEiT("beit_base_patch16_224").config.layer_scale_init
        0.1
    """

    image_size: Any = 224
    patch_size: Any = 16
    num_channels: int = 3
    hidden_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_scale_init: float | None = 0.1
    position_embedding: str = "none"
    relative_position_bias: bool = True
    shared_relative_position_bias: bool = False
    pooling: str = "gap"
    fc_norm: bool | None = None
    num_classes: int = 1000
    layer_norm_epsilon: float = 1e-6

    def __post_init__(self):
        self.image_size = to_pair(self.image_size, "image_size")
        self.patch_size = to_pair(self.patch_size, "patch_size")
        self.validate()

    def validate(self) -> None:
        """Raises `ValueError` naming the bad value and the fix."""
        for field in ("num_channels", "hidden_dim", "depth", "num_heads", "mlp_dim"):
            check_positive_int(getattr(self, field), field)
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"`hidden_dim` ({self.hidden_dim}) must be divisible by `num_heads` ({self.num_heads}). "
                f"Received: hidden_dim={self.hidden_dim}, num_heads={self.num_heads}"
            )
        for axis, size, patch in zip(("height", "width"), self.image_size, self.patch_size):
            if size % patch:
                raise ValueError(
                    f"Image {axis} {size} is not divisible by patch size {patch}. Use an image size that is a "
                    f"multiple of the patch size. Received: image_size={self.image_size}, patch_size={self.patch_size}"
                )
        for field in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
            check_rate(getattr(self, field), field)
        if self.layer_scale_init is not None and not (
            isinstance(self.layer_scale_init, (int, float)) and self.layer_scale_init > 0
        ):
            raise ValueError(
                f"`layer_scale_init` must be positive or None. Received: layer_scale_init={self.layer_scale_init!r}"
            )
        check_choice(self.position_embedding, "position_embedding", BEIT_POSITION_EMBEDDINGS)
        check_choice(self.pooling, "pooling", POOLING_MODES)
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(
                f"`num_classes` must be an int >= 0 (0 gives the headless backbone). "
                f"Received: num_classes={self.num_classes!r}"
            )

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])

    # The token layout as `ViTConfig` names it (read by keras_vit.visualize): one class token, nothing else.
    class_token = property(lambda self: True)
    distillation_token = property(lambda self: False)
    num_register_tokens = property(lambda self: 0)

    @property
    def num_prefix_tokens(self) -> int:
        return 1

    @property
    def use_fc_norm(self) -> bool:
        return self.pooling == "gap" if self.fc_norm is None else bool(self.fc_norm)

    def to_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self)
        config["image_size"], config["patch_size"] = list(self.image_size), list(self.patch_size)
        return config


def beit_param_count(config: BEiTConfig) -> int:
    """Exact number of parameters of a `BEiT` built from `config`, without building it."""
    c, d = config, config.hidden_dim
    ph, pw = c.patch_size
    gh, gw = c.grid_size
    table = relative_position_table_size(c.grid_size) * c.num_heads
    count = ph * pw * c.num_channels * d + d + d  # patch projection and class token
    count += (gh * gw + 1) * d if c.position_embedding == "learned" else 0
    count += table if c.shared_relative_position_bias else 0
    block = 2 * 2 * d + 3 * d * d + d * d + d + d * c.mlp_dim + c.mlp_dim + c.mlp_dim * d + d
    block += 2 * d if c.qkv_bias else 0
    block += table if c.relative_position_bias else 0
    block += 2 * d if c.layer_scale_init is not None else 0
    count += c.depth * block + 2 * d  # blocks and the final norm (or fc_norm)
    return count + (d * c.num_classes + c.num_classes if c.num_classes else 0)


def beit_specs() -> list[ModelSpec]:
    """timm's BEiT names (the generated `timm_beit_variants` table) as the zoo's "beit" family."""
    return [ModelSpec(name=name, family="beit", **entry) for name, entry in BEIT_VARIANTS.items()]


@keras.saving.register_keras_serializable(package="keras_vit")
class BEiT(keras.Model):
    """BEiT: a ViT with per-block relative position biases (https://arxiv.org/abs/2106.08254).

    timm's `Beit` class; BEiT v2 (https://arxiv.org/abs/2208.06366) has the
    same architecture. Built by name, from arguments, or both:

        keras_vit.BEiT("beit_base_patch16_224", num_classes=10)
        keras_vit.BEiT(image_size=32, patch_size=4, hidden_dim=64, depth=2, num_heads=2, mlp_dim=128)

    Args:
        variant: str or None. A registered name (`keras_vit.list_models("beit*")`).
        image_size: int or (int, int). Defaults to 224.
        patch_size: int or (int, int). Defaults to 16.
        num_channels: int. Defaults to 3.
        hidden_dim: int. Token width. Defaults to 768.
        depth: int. Encoder blocks. Defaults to 12.
        num_heads: int. Attention heads. Defaults to 12.
        mlp_dim: int. MLP inner width. Defaults to 3072.
        qkv_bias: bool. Query and value biases (BEiT has no key bias). Defaults to True.
        dropout_rate: float. Dropout after projections and before the head. Defaults to 0.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to 0.
        drop_path_rate: float. Stochastic depth, rising linearly to this rate. Defaults to 0.
        layer_scale_init: float or None. Initial `gamma_1`/`gamma_2`. Defaults to 0.1.
        position_embedding: "none" (BEiT fine-tuned) or "learned" (absolute). Defaults to "none".
        relative_position_bias: bool. A relative position bias in every block. Defaults to True.
        shared_relative_position_bias: bool. One bias shared by all blocks
            (BEiT pretraining checkpoints). Defaults to False.
        pooling: "gap" (mean of patch tokens, timm's "avg") or "token". Defaults to "gap".
        fc_norm: bool or None. Normalise after pooling; None means True for "gap". Defaults to None.
        num_classes: int. 0 returns pooled features. Defaults to 1000.
        layer_norm_epsilon: float. Defaults to 1e-6.
        name, dtype: Keras model name and dtype policy (logits stay float32).
        weights: str or None. A checkpoint to load: timm BEiT or Hugging Face
            `BeitModel`/`BeitForImageClassification` safetensors (honouring a
            `config.json` beside it), a keras_vit `.weights.h5`, or a name from
            `keras_vit.weights.list_checkpoints("beit*")`.

    Call arguments:
        images: float `(batch, height, width, num_channels)`, normalised.

    Returns:
        Logits `(batch, num_classes)` (float32), or features `(batch, dim)` when `num_classes=0`.

    Examples:
        >>> model = keras_vit.BEiT("beit_base_patch16_224", num_classes=10)
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
            if spec.family != "beit":
                raise ValueError(
                    f"{variant!r} is a {spec.family!r} model, not a BEiT. "
                    f"Use keras_vit.create_model({variant!r}) or a name from keras_vit.list_models('beit*')."
                )
            arch = dict(spec.arch, **arch)
        check_arch_names(arch, BEiTConfig, "BEiT")
        config = BEiTConfig(**arch)
        images = keras.Input((*config.image_size, config.num_channels), name="images")
        outputs = _forward(config, _make_layers(config, dtype), images, with_attention=False)
        super().__init__(
            inputs=images, outputs=outputs.get("logits", outputs["pooled"]), name=name or variant or "beit", dtype=dtype
        )
        self.variant = variant
        self.config = config
        self.input_spec = None  # `check_images` in `call` names the fix
        if weights is not None:
            self.load_pretrained(weights)

    def get_config(self) -> dict[str, Any]:
        config = dict(variant=self.variant, name=self.name, **self.config.to_dict())
        policy = self.get_layer("patch_embed").dtype_policy.name
        if policy != "float32":
            config["dtype"] = policy
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return from_variant_config(cls, config)

    def call(self, inputs, training=None, mask=None):
        check_images(inputs, self.config)
        return super().call(inputs, training=training, mask=mask)

    # ---- weights ---------------------------------------------------------------------------------
    def load_pretrained(self, path: str, sha256: str | None = None):
        """Loads timm or Hugging Face BEiT safetensors, a `.weights.h5` or a catalogued name; see `keras_vit.weights`."""
        from keras_vit.weights import load_pretrained

        return load_pretrained(self, path, sha256=sha256)

    def load_checkpoint_file(self, path: str):
        """The loader's hook for families with their own key map: reads a local checkpoint file into this model."""
        from keras_vit.weights.beit_hf import load_beit_checkpoint

        return load_beit_checkpoint(self, path)

    @property
    def checkpoint_keys(self):
        """The key map between this model's variables and timm `Beit` checkpoints (`keras_vit.weights` uses it)."""
        from keras_vit.weights import timm_beit_keys

        return timm_beit_keys

    # ---- features and attention ------------------------------------------------------------------
    def intermediate_model(self) -> keras.Model:
        """A model on the same layers returning every block's tokens and attention weights.

        Outputs a dict as `ViT.intermediate_model()`: "blocks", "attention",
        "tokens", "pooled" and, with a head, "logits". Token order `[class, patches]`.
        """
        return _Intermediates(self)

    def forward_intermediates(
        self, images, indices=None, output_fmt: str = "NLC", training: bool = False
    ) -> dict[str, Any]:
        """Runs `intermediate_model()` on a batch, keeping the blocks `indices` in `output_fmt`.

        Args:
            images: a batch the model takes.
            indices: int, list of ints or None. Blocks to return (negative
                counts from the end; an int n means the last n blocks); None: all.
            output_fmt: "NLC" (every token) or "NHWC" (patch tokens only, as a
                `(batch, rows, cols, dim)` map; timm's `output_fmt="NHWC"`).

        Returns:
            The dict of `intermediate_model()`, "blocks" and "attention" limited to `indices`.
        """
        check_choice(output_fmt, "output_fmt", OUTPUT_FORMATS)
        chosen = block_indices(indices, self.config.depth)
        if getattr(self, "_intermediates", None) is None:
            self._intermediates = self.intermediate_model()
        check_images(images, self.config)
        outputs = dict(self._intermediates(images, training=training))
        outputs["blocks"] = [outputs["blocks"][i] for i in chosen]
        outputs["attention"] = [outputs["attention"][i] for i in chosen]
        if output_fmt == "NHWC":
            rows, cols = self.config.grid_size
            outputs["blocks"] = [
                ops.reshape(x[:, self.config.num_prefix_tokens :], (-1, rows, cols, self.config.hidden_dim))
                for x in outputs["blocks"]
            ]
        return outputs

    def feature_extractor(self) -> keras.Model:
        """A model on the same layers returning the pooled embedding the head sees."""
        last = "fc_norm" if self.config.use_fc_norm else "pool"
        return keras.Model(self.input, self.get_layer(last).output, name=f"{self.name}_features")

    # ---- resolution ------------------------------------------------------------------------------
    def with_image_size(self, image_size) -> BEiT:
        """A copy at another input size: relative position tables resized as timm does, absolute ones resampled."""
        config = dict(self.get_config(), image_size=image_size)
        resized = type(self).from_config(config)
        old_grid, new_grid = self.config.grid_size, resized.config.grid_size
        sources = {variable.path: variable for variable in self.weights}
        for variable in resized.weights:
            value = np.asarray(sources[variable.path].numpy())
            if variable.path.endswith("relative_position_bias_table"):
                value = resize_relative_position_table(value, old_grid, new_grid)
            elif variable.path == "pos_embed/embeddings":
                value = vit_layers.resample_position_embeddings(value, old_grid, new_grid, 1)
            variable.assign(value)
        return resized

    # ---- recipe hooks ----------------------------------------------------------------------------
    def no_weight_decay_variables(self) -> list:
        """Variables without weight decay: biases, norms, class token, position tables and biases, layer scales."""
        skip = (keras.layers.LayerNormalization, vit_layers.PrefixTokens, vit_layers.PositionEmbedding)
        names = {id(v) for layer in _walk_layers(self) if isinstance(layer, skip) for v in layer.trainable_variables}
        names |= {id(v) for v in self.trainable_variables if v.path.endswith("relative_position_bias_table")}
        return [v for v in self.trainable_variables if id(v) in names or len(v.shape) <= 1]

    def layer_groups(self) -> list[list]:
        """Trainable variables by depth for layer-wise decay: embeddings, one group per block, then norm and head."""
        groups = [[] for _ in range(self.config.depth + 2)]
        for layer in self.layers:
            if layer.name.startswith("block_"):
                index = int(layer.name.split("_")[1]) + 1
            elif layer.name in ("patch_embed", "prefix_tokens", "pos_embed", "rel_pos_bias"):
                index = 0
            else:
                index = self.config.depth + 1
            groups[index].extend(layer.trainable_variables)
        return groups


class _Intermediates(keras.Model):
    """`BEiT.intermediate_model()`: the model's own layers run with attention weights requested."""

    def __init__(self, beit: BEiT):
        super().__init__(name=f"{beit.name}_intermediates")
        self.beit_config = beit.config
        self.beit_layers = {
            layer.name: layer for layer in beit.layers if not isinstance(layer, keras.layers.InputLayer)
        }
        self.build((None, *beit.config.image_size, beit.config.num_channels))

    def call(self, images, training=None):
        return _forward(self.beit_config, self.beit_layers, images, with_attention=True, training=training)


def _make_layers(c: BEiTConfig, dtype) -> dict[str, keras.layers.Layer]:
    """Every layer of the model by name (timm's names), in forward order."""
    made = {
        "patch_embed": vit_layers.PatchEmbedding(c.patch_size, c.hidden_dim, name="patch_embed", dtype=dtype),
        "prefix_tokens": vit_layers.PrefixTokens(True, name="prefix_tokens", dtype=dtype),
    }
    if c.position_embedding == "learned":
        made["pos_embed"] = vit_layers.PositionEmbedding(c.grid_size, 1, name="pos_embed", dtype=dtype)
    made["pos_drop"] = keras.layers.Dropout(c.dropout_rate, name="pos_drop", dtype=dtype)
    if c.shared_relative_position_bias:
        made["rel_pos_bias"] = BeitRelativePositionBias(c.grid_size, c.num_heads, name="rel_pos_bias", dtype=dtype)
    drop_path_rates = np.linspace(0.0, c.drop_path_rate, c.depth) if c.depth > 1 else [c.drop_path_rate]
    for i in range(c.depth):
        made[f"block_{i}"] = BeitBlock(
            c.num_heads,
            c.mlp_dim,
            qkv_bias=c.qkv_bias,
            grid_size=c.grid_size if c.relative_position_bias else None,
            dropout_rate=c.dropout_rate,
            attention_dropout_rate=c.attention_dropout_rate,
            drop_path_rate=float(drop_path_rates[i]),
            layer_scale_init=c.layer_scale_init,
            layer_norm_epsilon=c.layer_norm_epsilon,
            name=f"block_{i}",
            dtype=dtype,
        )
    norm = "fc_norm" if c.use_fc_norm else "norm"
    made[norm] = vit_layers.LayerNorm(epsilon=c.layer_norm_epsilon, name=norm, dtype=dtype)
    made["pool"] = vit_layers.TokenPooling(c.pooling, c.num_prefix_tokens, name="pool", dtype=dtype)
    if c.num_classes:
        made["head_drop"] = keras.layers.Dropout(c.dropout_rate, name="head_drop", dtype=dtype)
        made["head"] = keras.layers.Dense(c.num_classes, kernel_initializer="zeros", name="head", dtype="float32")
    return made


def _forward(c: BEiTConfig, layer: dict, images, with_attention: bool, training=None) -> dict[str, Any]:
    """Runs `images` through the layers; every intermediate by name. Attention weights only `with_attention`."""
    x = layer["prefix_tokens"](layer["patch_embed"](images))
    if "pos_embed" in layer:
        x = layer["pos_embed"](x)
    x = layer["pos_drop"](x, training=training)
    shared = layer["rel_pos_bias"](x) if "rel_pos_bias" in layer else None
    blocks, attention = [], []
    for i in range(c.depth):
        x = layer[f"block_{i}"](x, return_attention_scores=with_attention, attention_bias=shared, training=training)
        if with_attention:
            x, weights = x
            attention.append(weights)
        blocks.append(x)
    tokens = x if c.use_fc_norm else layer["norm"](x)
    pooled = layer["pool"](tokens)
    if c.use_fc_norm:
        pooled = layer["fc_norm"](pooled)
    outputs = {"blocks": blocks, "attention": attention, "tokens": tokens, "pooled": pooled}
    if c.num_classes:
        outputs["logits"] = layer["head"](layer["head_drop"](pooled, training=training))
    return outputs
