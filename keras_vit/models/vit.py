"""Vision Transformer (ViT) and DeiT as functional `keras.Model` subclasses.

One class covers the family through its arguments (class/distillation/register
tokens, pooling, LayerScale, qk-norm...). Layer names follow timm so that
published checkpoints map one to one and users can read both side by side.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import keras
import numpy as np

from keras_vit import layers as vit_layers
from keras_vit.layers.embeddings import DropPrefixTokens, resample_patch_kernel
from keras_vit.models._arch import block_indices, from_variant_config, patch_maps
from keras_vit.validation import check_choice, check_positive_int, check_rate, to_pair

POSITION_EMBEDDINGS = ("learned", "sincos", "none")
# "gap" is the name earlier releases gave "avg"; both pool the patch tokens by their mean.
POOLINGS = ("token", "gap", "avg", "max", "avgmax", "map")
AVERAGE_POOLINGS = ("gap", "avg", "max", "avgmax")
NORM_LAYERS = ("layer", "rms")
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "silu", "relu")
MLP_KINDS = ("mlp", "swiglu", "swiglu_packed")
BLOCK_KINDS = ("standard", "res_post", "parallel_scaling", "parallel_things", "diff_parallel_scaling")
ATTENTION_LAYERS = ("standard", "diff")


@dataclasses.dataclass
class ViTConfig:
    """Architecture arguments of `ViT`; see `ViT` for their meaning.

    `model.config` holds the one a model was built with; validated on creation.

    Attributes:
        fields: one per `ViT` architecture argument, of the same name and
            meaning: image_size, patch_size, num_channels, hidden_dim, depth,
            num_heads, mlp_dim, qkv_bias, qk_norm, dropout_rate,
            attention_dropout_rate, drop_path_rate, layer_scale_init,
            class_token, distillation_token, num_register_tokens,
            position_embedding, pos_embed_prefix, pooling, fc_norm,
            representation_size, num_classes, layer_norm_epsilon, pre_norm,
            final_norm, patch_bias, embed_norm, norm_layer, activation,
            mlp_kind, proj_bias, attn_inner_norm, mlp_inner_norm, block_kind,
            num_parallel, attn_layer, dynamic_image_size,
            drop_patch_remainder. A config saved
            before a field existed loads with the field's default, which
            is the behaviour of that earlier release.

    Examples:
        >>> config = keras_vit.ViT("vit_tiny_patch16_224", num_classes=10).config
        >>> config.hidden_dim, config.depth, config.num_classes
        (192, 12, 10)
    """

    image_size: Any = 224
    patch_size: Any = 16
    num_channels: int = 3
    hidden_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    qk_norm: bool = False
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_scale_init: float | None = None
    class_token: bool = True
    distillation_token: bool = False
    num_register_tokens: int = 0
    position_embedding: str = "learned"
    pos_embed_prefix: bool = True
    pooling: str = "token"
    fc_norm: bool | None = None
    representation_size: int | None = None
    num_classes: int = 1000
    layer_norm_epsilon: float = 1e-6
    pre_norm: bool = False
    final_norm: bool = True
    patch_bias: bool = True
    embed_norm: bool = False
    norm_layer: str = "layer"
    activation: str = "gelu"
    mlp_kind: str = "mlp"
    proj_bias: bool = True
    attn_inner_norm: bool = False
    mlp_inner_norm: bool = False
    block_kind: str = "standard"
    num_parallel: int = 2
    attn_layer: str = "standard"
    dynamic_image_size: bool = False
    drop_patch_remainder: bool = False

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
                f"`hidden_dim` ({self.hidden_dim}) must be divisible by `num_heads` ({self.num_heads}); "
                f"each head gets hidden_dim / num_heads channels. Received: hidden_dim={self.hidden_dim}, "
                f"num_heads={self.num_heads}"
            )
        for axis, size, patch in zip(("height", "width"), self.image_size, self.patch_size):
            if size % patch and not self.drop_patch_remainder:
                raise ValueError(
                    f"Image {axis} {size} is not divisible by patch size {patch}. Use an image size that is "
                    f"a multiple of the patch size (or drop_patch_remainder=True to ignore the last rows and columns, as timm "
                    f"does). Received: image_size={self.image_size}, "
                    f"patch_size={self.patch_size}"
                )
        for field in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
            check_rate(getattr(self, field), field)
        if self.layer_scale_init is not None and not self.layer_scale_init > 0:
            raise ValueError(
                f"`layer_scale_init` must be positive or None. Received: layer_scale_init={self.layer_scale_init!r}"
            )
        check_choice(self.pooling, "pooling", POOLINGS)
        for field, choices in (
            ("norm_layer", NORM_LAYERS),
            ("activation", ACTIVATIONS),
            ("mlp_kind", MLP_KINDS),
            ("block_kind", BLOCK_KINDS),
            ("attn_layer", ATTENTION_LAYERS),
        ):
            check_choice(getattr(self, field), field, choices)
        check_positive_int(self.num_parallel, "num_parallel")
        if self.mlp_kind == "swiglu_packed" and self.mlp_dim % 2:
            raise ValueError(
                f"A packed SwiGLU MLP splits `mlp_dim` into gate and value halves, so it must be even. "
                f"Received: mlp_dim={self.mlp_dim}"
            )
        if self.block_kind in ("parallel_scaling", "diff_parallel_scaling") and (
            self.attn_inner_norm or self.mlp_inner_norm or self.mlp_kind != "mlp"
        ):
            raise ValueError(
                f"block_kind={self.block_kind!r} fuses attention and a plain MLP into one projection; it takes "
                "no inner norms and mlp_kind='mlp' only. Received: "
                f"attn_inner_norm={self.attn_inner_norm}, mlp_inner_norm={self.mlp_inner_norm}, "
                f"mlp_kind={self.mlp_kind!r}"
            )
        differential = self.attn_layer == "diff" or self.block_kind == "diff_parallel_scaling"
        if differential and (self.hidden_dim // self.num_heads) % 2:
            raise ValueError(
                "Differential attention splits each head in two, so hidden_dim / num_heads must be even. "
                f"Received: hidden_dim={self.hidden_dim}, num_heads={self.num_heads}"
            )
        if self.pooling == "token" and not self.class_token:
            raise ValueError("`pooling='token'` needs a class token. Set class_token=True or pooling='avg'.")
        if self.distillation_token and (self.pooling != "token" or not self.class_token):
            raise ValueError("A distillation token needs class_token=True and pooling='token' (DeiT).")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"`position_embedding` must be one of {POSITION_EMBEDDINGS}. "
                f"Received: position_embedding={self.position_embedding!r}"
            )
        if self.dynamic_image_size and self.position_embedding == "sincos":
            raise ValueError(
                "dynamic_image_size=True resamples a learned position table; the fixed sin-cos table has one grid. "
                "Use position_embedding='learned' or dynamic_image_size=False. "
                f"Received: position_embedding={self.position_embedding!r}"
            )
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(
                f"`num_classes` must be an int >= 0 (0 gives the headless backbone). "
                f"Received: num_classes={self.num_classes!r}"
            )
        if not isinstance(self.num_register_tokens, int) or self.num_register_tokens < 0:
            raise ValueError(
                f"`num_register_tokens` must be an int >= 0. Received: num_register_tokens={self.num_register_tokens!r}"
            )

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + int(self.distillation_token) + self.num_register_tokens

    @property
    def use_fc_norm(self) -> bool:
        """Whether the final norm follows the pooling (timm: by default for the average/max pools)."""
        return self.pooling in AVERAGE_POOLINGS if self.fc_norm is None else bool(self.fc_norm)

    @property
    def uses_final_norm(self) -> bool:
        """Whether a final norm (before pooling, `norm`) runs on the tokens."""
        return self.final_norm and not self.use_fc_norm

    @property
    def uses_fc_norm(self) -> bool:
        """Whether a norm (`fc_norm`) runs on the pooled vector."""
        return self.final_norm and self.use_fc_norm

    def to_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self)
        config["image_size"], config["patch_size"] = list(self.image_size), list(self.patch_size)
        return config


def vit_config(arch: dict[str, Any], label: str = "ViT") -> ViTConfig:
    """`ViTConfig(**arch)`, naming any unknown argument and the valid ones (`label` names whose arguments)."""
    valid = [f.name for f in dataclasses.fields(ViTConfig)]
    unknown = set(arch) - set(valid)
    if unknown:
        raise ValueError(f"Unknown {label} argument(s) {sorted(unknown)}. Valid: {valid}")
    return ViTConfig(**arch)


def vit_param_count(config: ViTConfig) -> int:
    """Exact number of parameters of a `ViT` built from `config`, without building it.

    Sublayer by sublayer as timm's `VisionTransformer` lays them out, so it
    also equals timm's count for the same architecture.
    """
    c, d, m = config, config.hidden_dim, config.mlp_dim
    ph, pw = c.patch_size
    gh, gw = c.grid_size
    count = ph * pw * c.num_channels * d + (d if c.patch_bias else 0) + (_norm_count(c, d) if c.embed_norm else 0)
    count += c.num_prefix_tokens * d
    if c.position_embedding == "learned":
        count += (gh * gw + (c.num_prefix_tokens if c.pos_embed_prefix else 0)) * d
    count += _norm_count(c, d) if c.pre_norm else 0
    count += c.depth * _block_count(c)
    count += _norm_count(c, d) if c.final_norm else 0  # `norm` before pooling or `fc_norm` after it
    if c.pooling == "map":  # timm's AttentionPoolLatent: latent, q, kv, proj, norm, MLP
        count += d + (d * d + d) + (2 * d * d + 2 * d) + (d * d + d) + _norm_count(c, d) + (2 * d * m + m + d)
    features = d
    if c.representation_size:
        count += d * c.representation_size + c.representation_size
        features = c.representation_size
    heads = 2 if c.distillation_token else 1
    if c.num_classes:
        count += heads * (features * c.num_classes + c.num_classes)
    return count


def _norm_count(c: ViTConfig, width: int) -> int:
    return width if c.norm_layer == "rms" else 2 * width


def _attention_count(c: ViTConfig) -> int:
    d = c.hidden_dim
    head_dim = d // c.num_heads // (2 if c.attn_layer == "diff" else 1)
    count = 3 * d * d + (3 * d if c.qkv_bias else 0) + d * d + (d if c.proj_bias else 0)
    count += 2 * _norm_count(c, head_dim) if c.qk_norm else 0
    count += _norm_count(c, d) if c.attn_inner_norm else 0
    if c.attn_layer == "diff":
        count += 4 * head_dim + 2 * head_dim  # lambda_q1/k1/q2/k2 and the RMS sub-norm over both halves
    return count


def _mlp_count(c: ViTConfig) -> int:
    d, m, bias = c.hidden_dim, c.mlp_dim, c.proj_bias
    inner = m // 2 if c.mlp_kind == "swiglu_packed" else m  # width after the gate
    fc1 = (2 if c.mlp_kind == "swiglu" else 1) * (d * m + (m if bias else 0))
    return fc1 + (_norm_count(c, inner) if c.mlp_inner_norm else 0) + inner * d + (d if bias else 0)


def _block_count(c: ViTConfig) -> int:
    d, m = c.hidden_dim, c.mlp_dim
    scale = d if c.layer_scale_init is not None else 0
    if c.block_kind in ("parallel_scaling", "diff_parallel_scaling"):
        diff = c.block_kind == "diff_parallel_scaling"
        head_dim = d // c.num_heads // (2 if diff else 1)
        count = _norm_count(c, d) + d * (m + 3 * d) + (m + 3 * d if c.qkv_bias else m)  # in_norm, in_proj, mlp_bias
        count += 2 * _norm_count(c, head_dim) if c.qk_norm else 0
        if diff:  # lambdas, sub-norm and one fused out_proj
            count += 6 * head_dim + (d + m) * d + (d if c.proj_bias else 0)
        else:  # attn_out_proj and mlp_out_proj
            count += (d + m) * d + (2 * d if c.proj_bias else 0)
        return count + scale
    branches = c.num_parallel if c.block_kind == "parallel_things" else 1
    scales = 0 if c.block_kind == "res_post" else 2 * scale  # ResPost's init value scales its norms instead
    return branches * (2 * _norm_count(c, d) + _attention_count(c) + _mlp_count(c) + scales)


@keras.saving.register_keras_serializable(package="keras_vit")
class ViT(keras.Model):
    """Vision Transformer (Dosovitskiy et al. 2020, https://arxiv.org/abs/2010.11929).

    Built by name from the model zoo or from explicit arguments; the two mix,
    explicit arguments overriding the variant's:

        keras_vit.ViT("vit_base_patch16_224", num_classes=10, image_size=384)
        keras_vit.ViT(image_size=32, patch_size=4, hidden_dim=192, depth=9,
                      num_heads=12, mlp_dim=384, num_classes=10)

    Args:
        variant: str or None. A registered name (see `keras_vit.list_models()`).
        image_size: int or (int, int). Input height and width. Defaults to 224.
        patch_size: int or (int, int). Defaults to 16.
        num_channels: int. Image channels. Defaults to 3.
        hidden_dim: int. Token width. Defaults to 768.
        depth: int. Number of encoder blocks. Defaults to 12.
        num_heads: int. Attention heads; must divide `hidden_dim`. Defaults to 12.
        mlp_dim: int. MLP inner width. Defaults to 3072.
        qkv_bias: bool. Bias in qkv projections. Defaults to True.
        qk_norm: bool. LayerNorm on queries and keys. Defaults to False.
        dropout_rate: float. Dropout after embeddings and projections. Defaults to 0.
        attention_dropout_rate: float. Dropout on attention weights. Defaults to 0.
        drop_path_rate: float. Stochastic depth, rising linearly to this rate in the
            last block (DeiT). Defaults to 0.
        layer_scale_init: float or None. LayerScale initial value. Defaults to None (off).
        class_token: bool. Prepend a class token. Defaults to True.
        distillation_token: bool. DeiT distillation token and second head
            `head_dist`; the model's output is then the mean of both heads' logits
            (DeiT inference) and `heads_model()` gives both for a distillation loss.
        num_register_tokens: int. Register tokens (left out of pooling). Defaults to 0.
        position_embedding: "learned", "sincos" (fixed 2D) or "none". Defaults to "learned".
        pos_embed_prefix: bool. Whether prefix tokens get learned position entries
            (timm's `not no_embed_class`). Defaults to True.
        pooling: "token" (class token), "avg" (mean of patch tokens; "gap" is the same),
            "max", "avgmax" (their mean) or "map" (SigLIP's attention-pooling head).
            Defaults to "token".
        fc_norm: bool or None. Normalise after pooling instead of before; None
            means True for "gap" (timm). Defaults to None.
        representation_size: int or None. Dense+tanh pre-logits layer of the
            original ViT. Defaults to None.
        num_classes: int. Classes of the head; 0 returns pooled features. Defaults to 1000.
        layer_norm_epsilon: float. Epsilon of every norm. Defaults to 1e-6.
        pre_norm: bool. A norm before the blocks (CLIP's `ln_pre`). Defaults to False.
        final_norm: bool. The norm after the blocks; off in towers read before it. Defaults to True.
        patch_bias: bool. Bias of the patch projection (CLIP has none). Defaults to True.
        embed_norm: bool. A norm right after the patch projection (AIMv2). Defaults to False.
        norm_layer: "layer" (LayerNorm) or "rms" (RMSNorm) for every norm. Defaults to "layer".
        activation: the MLP's "gelu" (erf), "gelu_tanh", "quick_gelu", "silu" or "relu".
            Defaults to "gelu".
        mlp_kind: "mlp", "swiglu" (separate gate and value projections) or
            "swiglu_packed" (one projection, gate first; `mlp_dim` is its width). Defaults to "mlp".
        proj_bias: bool. Biases of the attention output and MLP projections. Defaults to True.
        attn_inner_norm: bool. Norm before the attention's output projection
            (timm's `scale_attn_norm`). Defaults to False.
        mlp_inner_norm: bool. Norm before the MLP's second projection
            (timm's `scale_mlp_norm`). Defaults to False.
        block_kind: "standard" (pre-norm), "res_post" (norm closing each branch),
            "parallel_scaling" (attention and MLP from one fused projection),
            "parallel_things" (`num_parallel` attention and MLP branches summed) or
            "diff_parallel_scaling". Defaults to "standard".
        num_parallel: int. Branches of a "parallel_things" block. Defaults to 2.
        attn_layer: "standard" or "diff" (differential attention, two softmax maps).
            Defaults to "standard".
        drop_patch_remainder: bool. Ignore the pixels past the last whole patch,
            as timm's patch-14 models at 384 px do. Defaults to False.
        dynamic_image_size: bool. Accept any image size (a multiple of the patch
            size) at run time: the input is `(None, None, channels)` and the
            learned position table, made for `image_size`, is resampled in the
            graph to each batch's patch grid (timm's `dynamic_img_size`).
            Defaults to False.
        name: str or None. Keras model name. Defaults to the variant's name, or "vit".
        dtype: dtype policy of every layer; the logits stay float32.
        weights: str or None. A checkpoint to load after building: a file (timm
            or Hugging Face `.safetensors`, the original ViT `.npz`, a keras_vit
            `.weights.h5`) or a name from `keras_vit.weights.list_checkpoints()`
            (downloaded once). The position embedding is resampled to
            `image_size`, and a head with another class count is left freshly
            initialised (with a warning) for fine-tuning. Defaults to None.

    Call arguments:
        images: float `(batch, height, width, num_channels)`, already normalised
            (see `keras_vit.model_spec(name).mean/std`).

    Returns:
        Logits `(batch, num_classes)` (float32), or features `(batch, dim)`
        when `num_classes=0`.

    Examples:
        >>> model = keras_vit.ViT("vit_tiny_patch16_224", num_classes=10)
        >>> model(np.zeros((2, 224, 224, 3), "float32")).shape
        TensorShape([2, 10])
        >>> finetune = keras_vit.ViT("vit_base_patch16_224", weights="ViT-B_16.npz", image_size=384, num_classes=10)
        >>> outputs = model.forward_intermediates(images)  # per-block tokens and attention
        >>> bigger = model.with_image_size(384)             # resamples position embeddings
    """

    def __init__(
        self, variant: str | None = None, /, *, name: str | None = None, dtype=None, weights: str | None = None, **arch
    ):
        if variant is not None:
            from keras_vit.models.registry import model_spec

            spec = model_spec(variant)
            if not spec.arch:
                raise ValueError(
                    f"{variant!r} is registered by a builder function, not as a ViT variant. "
                    f"Use keras_vit.create_model({variant!r}) instead."
                )
            arch = dict(spec.arch, **arch)
        config = vit_config(arch)
        inputs, outputs = _build_graph(config, dtype)
        super().__init__(inputs=inputs, outputs=outputs, name=name or variant or "vit", dtype=dtype)
        self.variant = variant
        self.config = config
        self.input_spec = None  # `check_images` in `call` gives errors that name the fix
        if weights is not None:  # a checkpoint file or catalogued name; not part of get_config
            self.load_pretrained(weights)

    # ---- construction helpers -------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = dict(variant=self.variant, name=self.name, **self.config.to_dict())
        # The blocks' policy (e.g. mixed_bfloat16 from a recipe's global policy), so a saved
        # model reloads with the precision it was trained in; float32 stays implicit.
        policy = self.get_layer("patch_embed").dtype_policy.name
        if policy != "float32":
            config["dtype"] = policy
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return from_variant_config(cls, config)

    def call(self, inputs, training=None, mask=None):
        self._check_input(inputs)
        return super().call(inputs, training=training, mask=mask)

    def load_pretrained(self, path: str, sha256: str | None = None):
        """Loads timm/HF safetensors, an original ViT `.npz`, a `.weights.h5` or a catalogued checkpoint name.

        See `keras_vit.weights.load_pretrained`: all or nothing, position
        embedding resampled, head replaced (with a warning) when classes differ.
        """
        from keras_vit.weights import load_pretrained

        return load_pretrained(self, path, sha256=sha256)

    # ---- features and attention ------------------------------------------------------------
    def intermediate_model(self) -> keras.Model:
        """A model on the same layers returning every block's tokens and attention weights.

        Outputs a dict: "blocks" (list of `(batch, tokens, dim)`), "attention"
        (list of `(batch, heads, tokens, tokens)`, float32), "tokens" (final
        normalised tokens), "pooled" (the vector the head sees) and, with a head,
        "logits". Token order is `[class, distillation, registers..., patches]`.
        The model itself never computes attention weights; this one does.
        """
        return _Intermediates(self)

    def forward_intermediates(
        self, images, indices: int | list[int] | None = None, output_fmt: str = "NLC", training: bool = False
    ) -> dict[str, Any]:
        """Runs `intermediate_model()` on a batch, keeping the blocks `indices` in `output_fmt`.

        Args:
            images: a batch the model takes.
            indices: int, list of ints or None. Blocks to return, as timm's: an
                int n means the last n blocks, a list names blocks (negative
                counts from the end); None: every block.
            output_fmt: "NLC" (every token) or "NHWC" (the patch tokens as
                `(batch, rows, columns, dim)` maps, class, distillation and
                register tokens removed: timm's `output_fmt="NCHW"` channels-last).

        Returns:
            The dict of `intermediate_model()`, "blocks" and "attention" limited to `indices`.
        """
        check_choice(output_fmt, "output_fmt", ("NLC", "NHWC"))
        chosen = block_indices(indices, self.config.depth)
        if getattr(self, "_intermediates", None) is None:
            self._intermediates = self.intermediate_model()
        self._check_input(images)
        outputs = dict(self._intermediates(images, training=training))
        outputs["blocks"] = [outputs["blocks"][i] for i in chosen]
        outputs["attention"] = [outputs["attention"][i] for i in chosen]
        if output_fmt == "NHWC":
            grid = (images.shape[1] // self.config.patch_size[0], images.shape[2] // self.config.patch_size[1])
            outputs["blocks"] = [patch_maps(x, self.config.num_prefix_tokens, grid) for x in outputs["blocks"]]
        return outputs

    def _check_input(self, images) -> None:
        """Clear `ValueError`s for a batch that does not fit (EVA accepts any size when dynamic)."""
        check_images(images, self.config)

    def feature_extractor(self) -> keras.Model:
        """A model on the same layers returning the pooled embedding the head sees."""
        return keras.Model(
            self.input, self.get_layer(_features_layer(self.config)).output, name=f"{self.name}_features"
        )

    def heads_model(self) -> keras.Model:
        """Distilled models: a model returning `{"cls": logits, "dist": logits}` for a distillation loss."""
        if not (self.config.distillation_token and self.config.num_classes):
            raise ValueError("heads_model() needs a model with distillation_token=True and num_classes > 0.")
        outputs = {"cls": self.get_layer("head").output, "dist": self.get_layer("head_dist").output}
        return keras.Model(self.input, outputs, name=f"{self.name}_heads")

    # ---- resolution ------------------------------------------------------------------------
    def with_image_size(self, image_size) -> ViT:
        """A copy of this model at another input size, weights copied and position embeddings resampled.

        The learned position table is resampled bicubically (antialiased, as
        timm does) with prefix-token entries kept; resizing to the current
        size returns an identical copy.
        """
        config = self.get_config()
        config["image_size"] = image_size
        resized = type(self).from_config(config)
        for layer in self.layers:
            weights = layer.get_weights()
            if not weights:
                continue
            if isinstance(layer, vit_layers.PositionEmbedding):
                weights = [
                    vit_layers.resample_position_embeddings(
                        weights[0], layer.grid_size, resized.config.grid_size, layer.num_prefix_tokens
                    )
                ]
            resized.get_layer(layer.name).set_weights(weights)
        return resized

    def with_patch_size(self, patch_size) -> ViT:
        """A copy of this model with another patch size at the same image size (FlexiViT).

        The patch-embedding kernel is resampled with the pseudo-inverse of the
        bicubic patch resize (`keras_vit.layers.embeddings.resample_patch_kernel`,
        timm's `resample_patch_embed`) and the position embedding to the new
        patch grid, so a FlexiViT checkpoint runs at any of its patch sizes.
        """
        config = self.get_config()
        config["patch_size"] = patch_size
        resized = type(self).from_config(config)
        for layer in self.layers:
            weights = layer.get_weights()
            if not weights:
                continue
            if isinstance(layer, vit_layers.PositionEmbedding):
                weights = [
                    vit_layers.resample_position_embeddings(
                        weights[0], layer.grid_size, resized.config.grid_size, layer.num_prefix_tokens
                    )
                ]
            elif layer.name == "patch_embed":
                weights[0] = resample_patch_kernel(weights[0], resized.config.patch_size)
            resized.get_layer(layer.name).set_weights(weights)
        return resized

    # ---- recipe hooks ----------------------------------------------------------------------
    def no_weight_decay_variables(self) -> list:
        """Variables that take no weight decay: biases, norms, tokens, position tables, LayerScale."""
        skip = (
            keras.layers.LayerNormalization,
            vit_layers.PrefixTokens,
            vit_layers.PositionEmbedding,
            vit_layers.LayerScale,
        )
        names = set()
        for layer in _walk_layers(self):
            if isinstance(layer, skip):
                names.update(id(v) for v in layer.trainable_variables)
        return [v for v in self.trainable_variables if id(v) in names or len(v.shape) <= 1]

    def layer_groups(self) -> list[list]:
        """Trainable variables grouped by depth for layer-wise learning-rate decay.

        Group 0 holds the embeddings (patches, tokens, positions), group i+1
        block i, and the last group the final norm, pre-logits and heads.
        """
        groups = [[] for _ in range(self.config.depth + 2)]
        for layer in self.layers:
            if layer.name.startswith("block_"):
                index = int(layer.name.split("_")[1]) + 1
            elif layer.name in ("patch_embed", "prefix_tokens", "pos_embed"):
                index = 0
            else:
                index = self.config.depth + 1
            groups[index].extend(layer.trainable_variables)
        return groups


@keras.saving.register_keras_serializable(package="keras_vit")
class DeiT(ViT):
    """Data-efficient image Transformer (Touvron et al. 2020, https://arxiv.org/abs/2012.12877).

    A `ViT` whose default is the distilled form: class and distillation tokens,
    two heads, and logits averaged at inference. Use `heads_model()` to train
    both heads with `keras_vit.training` distillation losses. Takes every
    argument of `ViT`; `keras_vit.DeiT("deit_small_patch16_224")` builds the
    plain (non-distilled) variants too.

    Args:
        variant: str or None. A registered name such as
            "deit_tiny_distilled_patch16_224"; None builds from the keyword
            arguments with `distillation_token=True` unless given.
        **kwargs: every `ViT` argument (architecture, `name`, `dtype`, `weights`).

    Returns:
        Like `ViT`; a distilled model outputs the mean of its two heads' logits.

    Examples:
        >>> student = keras_vit.DeiT(image_size=32, patch_size=4, hidden_dim=64, depth=2, num_heads=2,
        ...                          mlp_dim=128, num_classes=10)
        >>> heads = student.heads_model()   # {"cls", "dist"} logits for a distillation loss
    """

    def __init__(self, variant: str | None = None, /, **kwargs):
        if variant is None:
            kwargs.setdefault("distillation_token", True)
        super().__init__(variant, **kwargs)


INFERENCE_DTYPES = ("bfloat16", "float16", "float32")


def inference_copy(model: ViT, dtype: str = "bfloat16") -> ViT:
    """A copy of a ViT/DeiT whose weights are stored in `dtype` once, for inference.

    Under a `mixed_bfloat16` policy every call casts every float32 weight to
    bfloat16 again (18% of ViT-B/16's predict step on an AMX Xeon); the copy
    holds them in `dtype` already. What needs float32 for accuracy stays
    float32: layer-norm statistics, attention logits and softmax are computed
    in float32 whatever the dtype, and the classifier heads are float32 layers.

    Args:
        model: a built `ViT` (or `DeiT`), trained in any precision.
        dtype: "bfloat16" (default), "float16" or "float32".

    Returns:
        A new model of the same class and architecture, weights cast to `dtype`
        (heads float32), sharing nothing with `model`.
    """
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"`dtype` must be one of {INFERENCE_DTYPES}. Received: dtype={dtype!r}")
    if not isinstance(model, ViT):
        raise ValueError(f"`model` must be a keras_vit ViT or DeiT. Received: model={type(model).__name__}")
    config = dict(model.get_config(), dtype=dtype)
    copy = type(model).from_config(config)
    sources = {variable.path: variable for variable in model.weights}
    for variable in copy.weights:
        variable.assign(keras.ops.cast(sources[variable.path], variable.dtype))
    return copy


class _Intermediates(keras.Model):
    """`ViT.intermediate_model()`: the ViT's own layers run with attention weights requested.

    A subclassed model, because a functional one cannot reuse the blocks with
    another number of outputs than the ViT's graph gives them.
    """

    def __init__(self, vit: ViT):
        super().__init__(name=f"{vit.name}_intermediates")
        self.vit_config = vit.config
        self.vit_layers = {layer.name: layer for layer in vit.layers if not isinstance(layer, keras.layers.InputLayer)}
        self.build((None, *_input_size(vit.config), vit.config.num_channels))

    def call(self, images, training=None):
        return _forward(self.vit_config, self.vit_layers, images, with_attention=True)


def check_images(images, config: ViTConfig) -> None:
    """Raises a clear `ValueError` when a batch does not fit the model's input."""
    shape = tuple(images.shape)
    expected = (None, *config.image_size, config.num_channels)
    if len(shape) != 4:
        raise ValueError(
            f"Expected images of rank 4 (batch, height, width, channels) = {expected}, received shape {shape}. "
            "Add a batch axis with images[None] for a single image."
        )
    if shape[3] is not None and shape[3] != config.num_channels:
        raise ValueError(
            f"Expected {config.num_channels} channels (channels-last), received shape {shape}. Convert the "
            f"images (e.g. grey to RGB) or build the model with num_channels={shape[3]}."
        )
    if getattr(config, "dynamic_image_size", False):  # BEiT and other configs without it are fixed-size
        _check_dynamic_size(shape, config)
    elif None not in shape[1:3] and tuple(shape[1:3]) != config.image_size:
        raise ValueError(
            f"Expected images of size {config.image_size}, received {tuple(shape[1:3])}. Resize the images, or use "
            f"model.with_image_size({tuple(shape[1:3])}) to resample the position embeddings."
        )


def _check_dynamic_size(shape: tuple, config: ViTConfig) -> None:
    """A dynamic model takes any size of at least one patch, a multiple of the patch unless drop_patch_remainder."""
    for axis, size, patch in zip(("height", "width"), shape[1:3], config.patch_size):
        if size is None:
            continue
        if size < patch or (size % patch and not config.drop_patch_remainder):
            raise ValueError(
                f"Image {axis} {size} does not fit patch size {patch}: a dynamic-size model takes any multiple of "
                f"the patch size. Resize or crop the images. Received: image shape {shape}, "
                f"patch_size={config.patch_size}"
            )


def _features_layer(config: ViTConfig) -> str:
    if config.representation_size:
        return "pre_logits"
    if config.uses_fc_norm:
        return "fc_norm"
    return "attn_pool" if config.pooling == "map" else "pool"


def _walk_layers(layer):
    yield layer
    yield from layer._flatten_layers(include_self=False, recursive=True)


def _build_graph(c: ViTConfig, dtype) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Lays out the functional graph: patches -> tokens -> blocks -> pool -> head(s)."""
    images = keras.Input(_input_size(c) + (c.num_channels,), name="images")
    outputs = _forward(c, _make_layers(c, dtype), images, with_attention=False)
    return images, outputs.get("logits", outputs["pooled"])


def _input_size(c: ViTConfig) -> tuple:
    """`(height, width)` of the model's Input: None for both with a dynamic image size."""
    return (None, None) if c.dynamic_image_size else tuple(c.image_size)


# timm block classes by `block_kind`, from keras_vit.layers.
_BLOCK_CLASSES = {
    "standard": "TransformerEncoderBlock",
    "res_post": "ResPostBlock",
    "parallel_scaling": "ParallelScalingBlock",
    "parallel_things": "ParallelThingsBlock",
    "diff_parallel_scaling": "DiffParallelScalingBlock",
}


def _block_options(c: ViTConfig) -> dict[str, Any]:
    """Block arguments beyond the original ViT block's, passed only where they differ from its behaviour."""
    options = dict(
        activation=(c.activation, "gelu"),
        mlp_kind=(c.mlp_kind, "mlp"),
        norm=(c.norm_layer, "layer"),
        attn_inner_norm=(c.attn_inner_norm, False),
        mlp_inner_norm=(c.mlp_inner_norm, False),
        proj_bias=(c.proj_bias, True),
        attn_layer=(c.attn_layer, "standard"),
        num_parallel=(c.num_parallel if c.block_kind == "parallel_things" else 2, 2),
    )
    if c.block_kind not in ("parallel_scaling", "diff_parallel_scaling"):  # their fused MLP's bias is proj_bias
        options["mlp_bias"] = (c.proj_bias, True)
    return {name: value for name, (value, default) in options.items() if value != default}


def missing_layers(config: ViTConfig) -> list[str]:
    """The options of `config` that keras_vit.layers of this installation cannot build (empty: all can)."""
    from keras_vit.layers import normalization, pooling

    missing = []
    block = getattr(vit_layers, _BLOCK_CLASSES[config.block_kind], None)
    if block is None:
        missing.append(f"block_kind={config.block_kind!r}")
    else:
        accepted = inspect.signature(block.__init__).parameters
        missing += [f"{name}={value!r}" for name, value in _block_options(config).items() if name not in accepted]
    needs_norm_factory = config.norm_layer != "layer" or config.embed_norm
    if needs_norm_factory and not hasattr(normalization, "make_norm"):
        missing.append(f"norm_layer={config.norm_layer!r}" if config.norm_layer != "layer" else "embed_norm=True")
    if config.pooling == "map" and not hasattr(pooling, "AttentionPoolLatent"):
        missing.append("pooling='map'")
    if config.pooling in ("max", "avgmax") and config.pooling not in pooling.POOLING_MODES:
        missing.append(f"pooling={config.pooling!r}")
    return missing


def _norm(c: ViTConfig, name: str, dtype) -> keras.layers.Layer:
    if c.norm_layer == "layer":
        return vit_layers.LayerNorm(epsilon=c.layer_norm_epsilon, name=name, dtype=dtype)
    from keras_vit.layers.normalization import make_norm

    return make_norm(c.norm_layer, c.layer_norm_epsilon, name, dtype)


def _make_layers(c: ViTConfig, dtype) -> dict[str, keras.layers.Layer]:
    """Every layer of the model, by name (timm's names), in forward order."""
    missing = missing_layers(c)
    if missing:
        raise ValueError(f"This keras_vit installation has no layers for {', '.join(missing)}. Received: {missing}")
    made = {
        "patch_embed": vit_layers.PatchEmbedding(
            c.patch_size,
            c.hidden_dim,
            use_bias=c.patch_bias,
            drop_remainder=c.drop_patch_remainder,
            norm=c.norm_layer if c.embed_norm else None,
            norm_epsilon=c.layer_norm_epsilon,
            name="patch_embed",
            dtype=dtype,
        )
    }
    made["prefix_tokens"] = vit_layers.PrefixTokens(
        c.class_token, c.distillation_token, c.num_register_tokens, name="prefix_tokens", dtype=dtype
    )
    if c.position_embedding == "learned":
        prefix = c.num_prefix_tokens if c.pos_embed_prefix else 0
        dynamic = c.patch_size if c.dynamic_image_size else None
        made["pos_embed"] = vit_layers.PositionEmbedding(
            c.grid_size, prefix, patch_size=dynamic, name="pos_embed", dtype=dtype
        )
    elif c.position_embedding == "sincos":
        made["pos_embed"] = vit_layers.SinCosPositionEmbedding2D(c.grid_size, 0, name="pos_embed", dtype=dtype)
    made["pos_drop"] = keras.layers.Dropout(c.dropout_rate, name="pos_drop", dtype=dtype)
    if c.pre_norm:
        made["norm_pre"] = _norm(c, "norm_pre", dtype)
    drop_path_rates = np.linspace(0.0, c.drop_path_rate, c.depth) if c.depth > 1 else [c.drop_path_rate]
    block_class = getattr(vit_layers, _BLOCK_CLASSES[c.block_kind])
    takes_depth = "depth" in inspect.signature(block_class.__init__).parameters  # differential attention's lambda
    for i in range(c.depth):
        made[f"block_{i}"] = block_class(
            c.num_heads,
            c.mlp_dim,
            qkv_bias=c.qkv_bias,
            qk_norm=c.qk_norm,
            dropout_rate=c.dropout_rate,
            attention_dropout_rate=c.attention_dropout_rate,
            drop_path_rate=float(drop_path_rates[i]),
            layer_scale_init=c.layer_scale_init,
            layer_norm_epsilon=c.layer_norm_epsilon,
            name=f"block_{i}",
            dtype=dtype,
            **_block_options(c),
            **(dict(depth=i) if takes_depth else {}),
        )
    if c.uses_final_norm:
        made["norm"] = _norm(c, "norm", dtype)
    if c.pooling == "map":
        from keras_vit.layers.pooling import AttentionPoolLatent

        made["patch_tokens"] = DropPrefixTokens(c.num_prefix_tokens, name="patch_tokens", dtype=dtype)
        made["attn_pool"] = AttentionPoolLatent(
            c.num_heads,
            mlp_ratio=(c.mlp_dim + 0.5) / c.hidden_dim,  # the layer takes int(dim * ratio): exactly mlp_dim
            norm=c.norm_layer,
            norm_epsilon=c.layer_norm_epsilon,
            activation=c.activation,
            name="attn_pool",
            dtype=dtype,
        )
    else:
        mode = "token" if c.pooling == "token" else "gap" if c.pooling in ("gap", "avg") else c.pooling
        made["pool"] = vit_layers.TokenPooling(mode, c.num_prefix_tokens, name="pool", dtype=dtype)
    if c.uses_fc_norm:
        made["fc_norm"] = _norm(c, "fc_norm", dtype)
    if c.representation_size:
        made["pre_logits"] = keras.layers.Dense(
            c.representation_size, activation="tanh", name="pre_logits", dtype=dtype
        )
    heads = ("head", "head_dist") if c.distillation_token else ("head",)
    for name in heads if c.num_classes else ():
        made[name] = keras.layers.Dense(c.num_classes, kernel_initializer="zeros", name=name, dtype="float32")
    if c.num_classes and c.distillation_token:
        made["pool_dist"] = vit_layers.TokenPooling("token", token_index=1, name="pool_dist", dtype=dtype)
        made["head_average"] = keras.layers.Average(name="head_average", dtype="float32")
    return made


def _forward(c: ViTConfig, layer: dict, images, with_attention: bool) -> dict[str, Any]:
    """Runs `images` through the model's layers; every intermediate the model offers, by name.

    Attention weights are computed only `with_attention` (the intermediates'
    model): without them each block's attention may use a fused kernel.
    """
    x = layer["patch_embed"](images)
    # A dynamic table is resampled to the images' patch grid in the graph (timm's dynamic_img_size).
    grid_of = dict(images=images) if c.dynamic_image_size and c.position_embedding == "learned" else {}
    if c.position_embedding == "learned" and c.pos_embed_prefix:
        x = layer["pos_embed"](layer["prefix_tokens"](x), **grid_of)
    else:
        x = layer["prefix_tokens"](layer["pos_embed"](x, **grid_of) if "pos_embed" in layer else x)
    x = layer["pos_drop"](x)
    if c.pre_norm:
        x = layer["norm_pre"](x)
    blocks, attention = [], []
    for i in range(c.depth):
        x = layer[f"block_{i}"](x, return_attention_scores=with_attention)
        if with_attention:
            x, weights = x
            attention.append(weights)
        blocks.append(x)
    tokens = layer["norm"](x) if c.uses_final_norm else x
    if c.pooling == "map":
        pooled = layer["attn_pool"](layer["patch_tokens"](tokens))
    else:
        pooled = layer["pool"](tokens)
    if c.uses_fc_norm:
        pooled = layer["fc_norm"](pooled)
    if c.representation_size:
        pooled = layer["pre_logits"](pooled)
    outputs = {"blocks": blocks, "attention": attention, "tokens": tokens, "pooled": pooled}
    if c.num_classes:
        outputs["logits"] = layer["head"](pooled)
        if c.distillation_token:
            dist_logits = layer["head_dist"](layer["pool_dist"](tokens))
            outputs["logits"] = layer["head_average"]([outputs["logits"], dist_logits])
    return outputs
