"""Masked autoencoder (MAE, He et al. 2021, https://arxiv.org/abs/2111.06377) for ViT pretraining.

The encoder is a zoo ViT whose layers keep the ViT's names (`patch_embed`,
`prefix_tokens`, `pos_embed`, `block_{i}`, `norm`), so its weights move 1:1
into `keras_vit.ViT` for fine-tuning. Position embeddings are the paper's fixed
2D sin-cos table with a zero row for the class token, stored as non-trainable
weights as in the reference code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_vit import layers as vit_layers
from keras_vit.layers.masking import (
    DropPrefixTokens,
    MaskedPatchLoss,
    MaskTokenFill,
    RandomPatchMasking,
    check_mask_ratio,
    num_visible,
)
from keras_vit.layers.position import sincos_2d_table
from keras_vit.models.vit import ViTConfig, check_images, vit_config, vit_param_count

MAE_SOURCE = "He et al. 2021, Masked Autoencoders Are Scalable Vision Learners, https://arxiv.org/abs/2111.06377"


def sincos_position_table(grid_size: tuple[int, int], dim: int) -> np.ndarray:
    """`(1, 1 + rows * columns, dim)`: MAE's fixed 2D sin-cos table after a zero class-token row."""
    if dim % 4:
        raise ValueError(f"MAE's 2D sin-cos position embedding needs a width divisible by 4. Received: dim={dim}")
    table = sincos_2d_table(tuple(grid_size), dim)
    return np.concatenate([np.zeros((1, dim)), table])[None].astype("float32")


DECODER_DEFAULTS = dict(decoder_dim=512, decoder_depth=8, decoder_heads=16)


def _mae_arch(name: str | None) -> dict[str, Any] | None:
    """The registered MAE variant's arch (`encoder` and decoder sizes, from models/variants.py), else None."""
    from keras_vit.models.registry import list_models, model_spec

    return model_spec(name).arch if name in list_models("mae_*") else None


def resolve_encoder(name: str | None) -> tuple[str | None, dict[str, int]]:
    """(ViT variant, decoder defaults) of an encoder argument: a ViT zoo name or a registered `mae_*` name."""
    arch = _mae_arch(name)
    if arch is None:
        return name, dict(DECODER_DEFAULTS)
    return arch["encoder"], {key: arch[key] for key in DECODER_DEFAULTS}


def encoder_config(encoder: str | None, encoder_kwargs: dict[str, Any]) -> ViTConfig:
    """The encoder's `ViTConfig`: a zoo variant's arguments, overridden by `encoder_kwargs`."""
    arch = dict(encoder_kwargs)
    if encoder is not None:
        from keras_vit.models.registry import model_spec

        spec = model_spec(encoder)
        if not spec.arch or spec.family not in ("vit", "deit"):
            raise ValueError(
                f"The MAE encoder must be a ViT variant of the zoo (keras_vit.list_models('vit_*')). "
                f"Received: encoder={encoder!r}"
            )
        arch = dict(spec.arch, **arch)
    config = vit_config(arch, "encoder")
    if not config.class_token or config.distillation_token or config.num_register_tokens:
        raise ValueError(
            "The MAE encoder has exactly one prefix token, the class token. Received: "
            f"class_token={config.class_token}, distillation_token={config.distillation_token}, "
            f"num_register_tokens={config.num_register_tokens}"
        )
    return config


def mae_param_count(config: ViTConfig, decoder_dim: int, decoder_depth: int, decoder_mlp_dim: int) -> int:
    """Exact number of weights of an `MAE` (the fixed position tables included), without building it."""
    plain = dict(num_classes=0, pooling="token", fc_norm=False, position_embedding="learned", pos_embed_prefix=True)
    encoder = vit_param_count(dataclasses.replace(config, **plain))
    tokens = 1 + config.grid_size[0] * config.grid_size[1]
    d, m = decoder_dim, decoder_mlp_dim
    pixels = config.patch_size[0] * config.patch_size[1] * config.num_channels
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    decoder = (config.hidden_dim * d + d) + d + tokens * d + decoder_depth * block + 2 * d + (d * pixels + pixels)
    return encoder + decoder


@keras.saving.register_keras_serializable(package="keras_vit")
class MAE(keras.Model):
    """Masked autoencoder around a zoo ViT encoder (He et al. 2021, https://arxiv.org/abs/2111.06377).

    Each call hides a random `mask_ratio` of every image's patches, encodes the
    rest, and a light decoder predicts the pixels of the hidden patches.

    Args:
        encoder: str. A ViT variant of the zoo (e.g. "vit_base_patch16_224"), or a
            registered MAE name (e.g. "mae_vit_base_patch16"), which also sets the decoder defaults.
        decoder_dim: int. Decoder width. Defaults to 512 (or the MAE variant's).
        decoder_depth: int. Decoder blocks. Defaults to 8 (or the MAE variant's).
        decoder_heads: int. Decoder attention heads; must divide `decoder_dim`. Defaults to 16 (or the variant's).
        decoder_mlp_dim: int or None. Decoder MLP width. Defaults to 4 x `decoder_dim`.
        mask_ratio: float in (0, 1). Fraction of patches removed. Defaults to 0.75.
        norm_pix_loss: bool. Per-patch normalised pixel targets. Defaults to False.
        weights: str or None. A checkpoint to load: a Hugging Face `ViTMAEForPreTraining`
            folder or `model.safetensors` (a `config.json` beside it sets the
            architecture, mask ratio and loss), a keras_vit `.weights.h5` or a saved `.keras` MAE.
        name, dtype, seed: Keras model name, dtype policy, and the seed of the masking noise.
        **encoder_kwargs: `ViT` arguments overriding the encoder variant's (e.g. `depth=4`).

    Call arguments:
        images: float `(batch, height, width, channels)`, normalised as the encoder expects.
        noise: optional `(batch, patches)` floats deciding which patches are kept
            (lowest first); drawn uniformly when None.

    Returns:
        A dict: "loss" (scalar MSE over removed patches), "pred" `(batch, patches,
        patch_h * patch_w * channels)` predicted patches, each flattened row by row
        with channels last (`keras_vit.layers.masking.unpatchify` makes images of
        them), and "mask" `(batch, patches)`, 1 where a patch was removed.

    Examples:
        >>> mae = keras_vit.MAE("vit_digits_patch2_8", decoder_dim=32, decoder_depth=1, decoder_heads=4)
        >>> out = mae(np.zeros((2, 8, 8, 1), "float32"))
        >>> out["pred"].shape, out["mask"].shape
        (TensorShape([2, 16, 4]), TensorShape([2, 16]))
    """

    def __init__(
        self,
        encoder: str | None = None,
        /,
        *,
        decoder_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_heads: int | None = None,
        decoder_mlp_dim: int | None = None,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        weights: str | None = None,
        name: str | None = None,
        dtype=None,
        seed: int | None = None,
        **encoder_kwargs,
    ):
        if weights is not None:
            from keras_vit.weights.mae_hf import checkpoint_arguments

            overrides = checkpoint_arguments(weights)
            encoder_kwargs = dict(encoder_kwargs, **overrides.pop("encoder_kwargs", {}))
            decoder_dim = overrides.get("decoder_dim", decoder_dim)
            decoder_depth = overrides.get("decoder_depth", decoder_depth)
            decoder_heads = overrides.get("decoder_heads", decoder_heads)
            decoder_mlp_dim = overrides.get("decoder_mlp_dim", decoder_mlp_dim)
            mask_ratio = overrides.get("mask_ratio", mask_ratio)
            norm_pix_loss = overrides.get("norm_pix_loss", norm_pix_loss)
        vit_name, defaults = resolve_encoder(encoder)
        decoder_dim = defaults["decoder_dim"] if decoder_dim is None else decoder_dim
        decoder_depth = defaults["decoder_depth"] if decoder_depth is None else decoder_depth
        decoder_heads = defaults["decoder_heads"] if decoder_heads is None else decoder_heads
        config = encoder_config(vit_name, encoder_kwargs)
        mask_ratio = check_mask_ratio(mask_ratio)
        decoder_mlp_dim = 4 * decoder_dim if decoder_mlp_dim is None else decoder_mlp_dim
        _check_decoder(decoder_dim, decoder_depth, decoder_heads, decoder_mlp_dim)
        sincos_position_table((1, 1), config.hidden_dim)  # width check with a clear message
        sincos_position_table((1, 1), decoder_dim)
        patches = config.grid_size[0] * config.grid_size[1]
        if num_visible(patches, mask_ratio) < 1:
            raise ValueError(
                f"With {patches} patches, mask_ratio={mask_ratio} leaves the encoder no patch to see. "
                f"Use a smaller mask_ratio. Received: mask_ratio={mask_ratio}"
            )
        inputs, outputs = _build_graph(
            config, decoder_dim, decoder_depth, decoder_heads, decoder_mlp_dim, mask_ratio, norm_pix_loss, dtype
        )
        super().__init__(inputs=inputs, outputs=outputs, name=name or _default_name(encoder), dtype=dtype)
        self.encoder = encoder
        self.encoder_kwargs = dict(encoder_kwargs)
        self.config = config
        self.decoder_dim, self.decoder_depth, self.decoder_heads = decoder_dim, decoder_depth, decoder_heads
        self.decoder_mlp_dim = decoder_mlp_dim
        self.mask_ratio, self.norm_pix_loss, self.seed = mask_ratio, bool(norm_pix_loss), seed
        self.input_spec = None
        self.noise_generator = keras.random.SeedGenerator(seed, name="noise_generator")
        self.get_layer("pos_embed").embeddings.assign(sincos_position_table(config.grid_size, config.hidden_dim))
        self.get_layer("decoder_pos_embed").embeddings.assign(sincos_position_table(config.grid_size, decoder_dim))
        if weights is not None:
            self.load_pretrained(weights)

    @property
    def num_patches(self) -> int:
        return self.config.grid_size[0] * self.config.grid_size[1]

    def get_config(self) -> dict[str, Any]:
        config = dict(
            encoder=self.encoder,
            decoder_dim=self.decoder_dim,
            decoder_depth=self.decoder_depth,
            decoder_heads=self.decoder_heads,
            decoder_mlp_dim=self.decoder_mlp_dim,
            mask_ratio=self.mask_ratio,
            norm_pix_loss=self.norm_pix_loss,
            name=self.name,
            seed=self.seed,
            **self.encoder_kwargs,
        )
        policy = self.get_layer("patch_embed").dtype_policy.name
        if policy != "float32":
            config["dtype"] = policy
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config.pop("trainable", None)
        return cls(config.pop("encoder", None), **config)

    def call(self, images, noise=None, training=None):
        check_images(images, self.config)
        if noise is None:
            batch = keras.ops.shape(images)[0]
            noise = keras.random.uniform((batch, self.num_patches), seed=self.noise_generator)
        return super().call({"images": images, "noise": noise}, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The model's own reconstruction loss (labels, if the data has any, are ignored)."""
        loss = y_pred["loss"]
        if self.losses:
            loss = loss + keras.ops.sum(self.losses)
        return _scale_for_replicas(loss)

    def load_pretrained(self, path: str):
        """Loads a Hugging Face `ViTMAEForPreTraining` checkpoint (file or folder), a `.weights.h5` or a `.keras` MAE."""
        from keras_vit.weights.loading import load_pretrained
        from keras_vit.weights.mae_hf import load_mae_checkpoint

        if str(path).endswith(".weights.h5"):
            return load_pretrained(self, path).loaded
        return load_mae_checkpoint(self, path)

    def encoder_model(self) -> keras.Model:
        """The encoder on all patches (no masking): `(batch, 1 + patches, dim)` normalised tokens."""
        from keras_vit.models.vit import ViT

        vit = ViT(
            **dict(
                self.config.to_dict(),
                num_classes=0,
                pooling="token",
                fc_norm=False,
                position_embedding="learned",
                pos_embed_prefix=True,
            )
        )
        from keras_vit.training.finetune import transfer_weights

        transfer_weights(self, vit)
        return vit

    # ---- recipe hooks ----------------------------------------------------------------------
    def no_weight_decay_variables(self) -> list:
        """Biases, norms, the class and mask tokens (the paper's `no_weight_decay` set)."""
        skip = (keras.layers.LayerNormalization, vit_layers.PrefixTokens, MaskTokenFill)
        names = set()
        for layer in self._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, skip):
                names.update(id(v) for v in layer.trainable_variables)
        return [v for v in self.trainable_variables if id(v) in names or len(v.shape) <= 1]

    def layer_groups(self) -> list[list]:
        """One group for the whole model: MAE pretraining uses no layer-wise decay."""
        return [list(self.trainable_variables)]


def _default_name(encoder: str | None) -> str:
    if encoder is None:
        return "mae"
    return encoder if _mae_arch(encoder) is not None else f"mae_{encoder}"


def _check_decoder(dim: int, depth: int, heads: int, mlp_dim: int) -> None:
    for field, value in (
        ("decoder_dim", dim),
        ("decoder_depth", depth),
        ("decoder_heads", heads),
        ("decoder_mlp_dim", mlp_dim),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{field}` must be a positive int. Received: {field}={value!r}")
    if dim % heads:
        raise ValueError(
            f"`decoder_dim` ({dim}) must be divisible by `decoder_heads` ({heads}); each head gets "
            f"decoder_dim / decoder_heads channels. Received: decoder_dim={dim}, decoder_heads={heads}"
        )


def _scale_for_replicas(loss):
    """Divides a replica's loss by the replica count under `tf.distribute`, as Keras' compiled losses do."""
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


def _build_graph(
    c: ViTConfig, decoder_dim, decoder_depth, decoder_heads, decoder_mlp_dim, mask_ratio, norm_pix_loss, dtype
):
    """images + noise -> masked encoder -> decoder -> {"loss", "pred", "mask"}."""
    images = keras.Input((*c.image_size, c.num_channels), name="images")
    noise = keras.Input((c.grid_size[0] * c.grid_size[1],), name="noise")
    x = vit_layers.PatchEmbedding(c.patch_size, c.hidden_dim, name="patch_embed", dtype=dtype)(images)
    x = vit_layers.PrefixTokens(True, False, 0, name="prefix_tokens", dtype=dtype)(x)
    pos = vit_layers.PositionEmbedding(c.grid_size, 1, initializer="zeros", name="pos_embed", dtype=dtype)
    pos.trainable = False  # the fixed sin-cos table (set after building)
    x = pos(x)
    x, mask, ids_restore = RandomPatchMasking(mask_ratio, 1, name="masking", dtype=dtype)(x, noise)
    drop_path_rates = np.linspace(0.0, c.drop_path_rate, c.depth) if c.depth > 1 else [c.drop_path_rate]

    def block(heads, mlp_dim, name, rate=0.0, encoder=True):
        return vit_layers.TransformerEncoderBlock(
            heads,
            mlp_dim,
            qkv_bias=c.qkv_bias,
            qk_norm=c.qk_norm and encoder,
            drop_path_rate=float(rate),
            layer_scale_init=c.layer_scale_init if encoder else None,
            layer_norm_epsilon=c.layer_norm_epsilon,
            name=name,
            dtype=dtype,
        )

    def norm(name):
        return vit_layers.LayerNorm(epsilon=c.layer_norm_epsilon, name=name, dtype=dtype)

    for i in range(c.depth):
        x = block(c.num_heads, c.mlp_dim, f"block_{i}", drop_path_rates[i])(x)
    x = norm("norm")(x)
    x = keras.layers.Dense(decoder_dim, name="decoder_embed", dtype=dtype)(x)
    x = MaskTokenFill(1, name="mask_token", dtype=dtype)(x, ids_restore)
    decoder_pos = vit_layers.PositionEmbedding(
        c.grid_size, 1, initializer="zeros", name="decoder_pos_embed", dtype=dtype
    )
    decoder_pos.trainable = False
    x = decoder_pos(x)
    for i in range(decoder_depth):
        x = block(decoder_heads, decoder_mlp_dim, f"decoder_block_{i}", encoder=False)(x)
    x = norm("decoder_norm")(x)
    pixels = c.patch_size[0] * c.patch_size[1] * c.num_channels
    x = keras.layers.Dense(pixels, name="decoder_pred", dtype="float32")(x)
    pred = DropPrefixTokens(1, name="pred", dtype="float32")(x)
    loss = MaskedPatchLoss(c.patch_size, norm_pix_loss, name="loss", dtype="float32")(images, pred, mask)
    return {"images": images, "noise": noise}, {"loss": loss, "pred": pred, "mask": mask}
