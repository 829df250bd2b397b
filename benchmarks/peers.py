"""Builds the same ViT in keras_vit, keras-hub and timm from one architecture dict.

Every builder takes the keras_vit architecture (`ViTConfig.to_dict()` keys)
so the three libraries run the same dimensions. keras-hub's `ViTBackbone`
returns normalised tokens; a class-token slice and a float32 `Dense` head
make it the same classifier as keras_vit's `ViT` (pre-norm blocks, final
LayerNorm, exact GELU, eps 1e-6). Other registered models (SigLIP, CLIP,
DINOv2, EVA, BEiT, ...) are built by name on every side (`family_arch`):
keras_vit's and timm's `create_model`, and keras-hub's own SigLIP, DINOv2
and CLIP classes at the same dims.

Import order matters: timm (torch._dynamo) must be imported before
TensorFlow in a process, so `build_timm` is only called in processes that
have not imported TensorFlow (the harness runs each case on its own).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LIBRARIES = ("keras_vit", "keras_hub", "timm")
KERAS_HUB_FAMILIES = ("siglip", "dinov2", "clip")  # keras_vit families keras-hub builds too


def resolve_arch(model: str | dict[str, Any]) -> dict[str, Any]:
    """A registry name or a partial architecture dict -> the full keras_vit architecture.

    Args:
        model: a `keras_vit` registry name (e.g. "vit_base_patch16_224") or a
            dict of `ViT` architecture arguments.

    Returns:
        The complete argument dict (`ViTConfig.to_dict()`), sizes as lists.
    """
    from keras_vit.models.registry import model_spec
    from keras_vit.models.vit import ViTConfig

    if isinstance(model, str):
        arch = dict(model_spec(model).arch)
    elif isinstance(model, dict):
        arch = dict(model)
    else:
        raise ValueError(f"`model` must be a registry name or an architecture dict. Received: model={model!r}")
    return ViTConfig(**arch).to_dict()


# The architecture arguments the peers' plain ViT builders map (`build_keras_hub`, `build_timm`).
PEER_KEYS = (
    "image_size",
    "patch_size",
    "num_channels",
    "hidden_dim",
    "depth",
    "num_heads",
    "mlp_dim",
    "qkv_bias",
    "dropout_rate",
    "attention_dropout_rate",
    "drop_path_rate",
    "num_classes",
    "layer_norm_epsilon",
)


def check_comparable(arch: dict[str, Any]) -> None:
    """Raises ValueError when the peers' plain ViT builders cannot express `arch` (a family option is set).

    Every argument outside `PEER_KEYS` must hold the value a plain ViT of the
    same dims gets; registered family models go through `family_arch` instead.
    """
    from keras_vit.models.vit import ViTConfig

    plain = ViTConfig(**{key: arch[key] for key in PEER_KEYS if key in arch}).to_dict()
    for key, value in arch.items():
        if key in plain and key not in PEER_KEYS and value != plain[key]:
            raise ValueError(
                f"The peer libraries' plain ViT builders only build the class-token ViT; `{key}` must be "
                f"{plain[key]!r} to compare, or pass a registered family name (`family_arch`). "
                f"Received: {key}={value!r}"
            )


# Overrides a family model takes on both sides (keras_vit argument -> timm argument): smaller test models.
FAMILY_OVERRIDES = {"depth": "depth", "image_size": "img_size", "num_classes": "num_classes"}
# keras_vit activation -> keras-hub's name for the same function.
_HUB_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_approximate", "quick_gelu": "quick_gelu"}


def resolve_model(model: str | dict[str, Any], **overrides) -> dict[str, Any]:
    """A plain ViT's full architecture (`resolve_arch`), or `family_arch` for any other registered name.

    Args:
        model: a registry name or a dict of `ViT` architecture arguments.
        **overrides: `depth`, `image_size` and/or `num_classes` (both sides build the smaller model).

    Returns:
        The architecture dict every builder, FLOP count and worker function here takes.
    """
    if isinstance(model, str):
        try:
            arch = resolve_arch(dict(resolve_arch(model), **overrides))
            check_comparable(arch)
            return arch
        except (TypeError, ValueError):
            return family_arch(model, **overrides)
    return resolve_arch(dict(model, **overrides))


def family_arch(name: str, **overrides) -> dict[str, Any]:
    """A registered model the peers build by name: keras_vit `create_model`, timm `create_model`, keras-hub's
    own class for the families it has (`KERAS_HUB_FAMILIES`).

    The dict keeps the keys the harness reads for any model (`image_size` as a pair, `num_channels`,
    `num_classes`) beside `registry_name`, `family`, `overrides` and the registered `arch`.
    """
    from keras_vit.models.registry import model_spec

    unknown = sorted(set(overrides) - set(FAMILY_OVERRIDES))
    if unknown:
        raise ValueError(
            f"A family model takes the overrides {sorted(FAMILY_OVERRIDES)} on every side. Received: {unknown}"
        )
    spec = model_spec(name)
    arch = dict(spec.arch, **overrides)
    size = arch.get("image_size", spec.input_size)
    height, width = (size, size) if isinstance(size, int) else size
    return dict(
        registry_name=name,
        family=spec.family,
        overrides=dict(overrides),
        arch=arch,
        image_size=[height, width],
        num_channels=arch.get("num_channels", 3),
        num_classes=arch.get("num_classes", spec.num_classes),
    )


def build_keras_vit(arch: dict[str, Any], dtype: str | None = None):
    """keras_vit's model for `arch` (`ViT`, or the registered family class by name); `dtype` is a Keras dtype
    policy name or None (global)."""
    if "registry_name" in arch:
        from keras_vit.models.registry import create_model

        return create_model(arch["registry_name"], dtype=dtype, **arch["overrides"])
    from keras_vit.models.vit import ViT

    return ViT(dtype=dtype, **arch)


def build_keras_hub(arch: dict[str, Any], dtype: str | None = None):
    """keras-hub `ViTBackbone` with the same dims, class-token slice and a float32 Dense head."""
    import keras
    import keras_hub

    if "registry_name" in arch:
        return build_keras_hub_family(arch, dtype=dtype)
    check_comparable(arch)
    height, width = arch["image_size"]
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(height, width, arch["num_channels"]),
        patch_size=tuple(arch["patch_size"]),
        num_layers=arch["depth"],
        num_heads=arch["num_heads"],
        hidden_dim=arch["hidden_dim"],
        mlp_dim=arch["mlp_dim"],
        dropout_rate=arch["dropout_rate"],
        attention_dropout=arch["attention_dropout_rate"],
        layer_norm_epsilon=arch["layer_norm_epsilon"],
        use_mha_bias=arch["qkv_bias"],
        dtype=dtype,
        name="backbone",
    )
    images = keras.Input((height, width, arch["num_channels"]), name="images")
    pooled = backbone(images)[:, 0]
    logits = keras.layers.Dense(arch["num_classes"], name="head", dtype="float32")(pooled)
    return keras.Model(images, logits, name="keras_hub_vit")


def build_keras_hub_family(arch: dict[str, Any], dtype: str | None = None):
    """keras-hub's own model of a `family_arch` (SigLIP, DINOv2, CLIP vision towers), random weights.

    keras-hub's towers return SigLIP's pooled (MAP) embedding, or normalised
    tokens for DINOv2 and CLIP, which the class token is sliced from as timm
    pools them; with classes, a float32 `Dense` head follows.
    """
    import keras
    import keras_hub

    family, spec = arch["family"], arch["arch"]
    if family not in KERAS_HUB_FAMILIES:
        raise ValueError(
            f"keras-hub has no model of the {family!r} family here; it builds {KERAS_HUB_FAMILIES}. "
            f"Leave keras_hub out of the variants. Received: model={arch['registry_name']!r}"
        )
    height, width = arch["image_size"]
    image_shape = (height, width, arch["num_channels"])
    dims = dict(
        patch_size=spec["patch_size"],
        hidden_dim=spec["hidden_dim"],
        num_layers=spec["depth"],
        num_heads=spec["num_heads"],
        intermediate_dim=spec["mlp_dim"],
        image_shape=image_shape,
        dtype=dtype,
        name="backbone",
    )
    activation = _HUB_ACTIVATIONS[spec.get("activation", "gelu")]
    if family == "siglip":
        backbone = keras_hub.models.SigLIPVisionEncoder(
            intermediate_activation=activation, layer_norm_epsilon=spec.get("layer_norm_epsilon", 1e-6), **dims
        )
    elif family == "clip":
        backbone = keras_hub.models.CLIPVisionEncoder(intermediate_activation=activation, **dims)
    else:
        backbone = keras_hub.models.DINOV2Backbone(
            layer_scale_init_value=spec.get("layer_scale_init") or 1.0,
            num_register_tokens=spec.get("num_register_tokens", 0),
            use_mask_token=False,
            position_embedding_shape=image_shape,
            **dims,
        )
    images = keras.Input(image_shape, name="images")
    features = backbone({"images": images})
    pooled = features if family == "siglip" else features[:, 0]
    if arch["num_classes"]:
        pooled = keras.layers.Dense(arch["num_classes"], name="head", dtype="float32")(pooled)
    return keras.Model(images, pooled, name=f"keras_hub_{family}")


def build_timm(arch: dict[str, Any]):
    """timm's model with the same dims (PyTorch, float32 weights, eval mode): `VisionTransformer` built from
    `arch`, or `timm.create_model` of a `family_arch`'s name (random weights)."""
    if "registry_name" in arch:
        return timm_by_name(arch).eval()
    from timm.models.vision_transformer import VisionTransformer

    check_comparable(arch)
    model = VisionTransformer(
        img_size=tuple(arch["image_size"]),
        patch_size=tuple(arch["patch_size"]),
        in_chans=arch["num_channels"],
        num_classes=arch["num_classes"],
        embed_dim=arch["hidden_dim"],
        depth=arch["depth"],
        num_heads=arch["num_heads"],
        mlp_ratio=arch["mlp_dim"] / arch["hidden_dim"],
        qkv_bias=arch["qkv_bias"],
        global_pool="token",
    )
    return model.eval()


def timm_by_name(arch: dict[str, Any]):
    """`timm.create_model` of a `family_arch` with its overrides, random weights, on the current torch device."""
    import timm

    kwargs = {FAMILY_OVERRIDES[key]: value for key, value in arch["overrides"].items()}
    kwargs.setdefault("num_classes", arch["num_classes"])
    return timm.create_model(arch["registry_name"], pretrained=False, **kwargs)


def copy_keras_hub_to_keras_vit(hub_model, vit_model) -> None:
    """Loads the weights of a `build_keras_hub` model into a `build_keras_vit` model.

    keras-hub keeps separate query/key/value kernels `(dim, heads, head_dim)`;
    keras_vit fuses them into one `(dim, 3 * dim)` kernel laid out as
    `(3, heads, head_dim)`, the layout timm checkpoints use.
    """
    backbone = hub_model.get_layer("backbone")
    embed = backbone.get_layer("vit_patching_and_embedding")
    encoder = backbone.get_layer("vit_encoder")
    dim = embed.hidden_dim

    def flat(variable):
        return np.asarray(variable.numpy(), dtype="float32")

    vit_model.get_layer("patch_embed").projection.set_weights(
        [flat(embed.patch_embedding.kernel), flat(embed.patch_embedding.bias)]
    )
    vit_model.get_layer("prefix_tokens").cls_token.assign(flat(embed.class_token))
    vit_model.get_layer("pos_embed").embeddings.assign(flat(embed.position_embedding.embeddings)[None])
    for i, block in enumerate(encoder.encoder_layers):
        ours = vit_model.get_layer(f"block_{i}")
        mha = block.mha
        kernels = [flat(d.kernel).reshape(dim, dim) for d in (mha._query_dense, mha._key_dense, mha._value_dense)]
        biases = [flat(d.bias).reshape(dim) for d in (mha._query_dense, mha._key_dense, mha._value_dense)]
        ours.attn.qkv.set_weights([np.concatenate(kernels, axis=1), np.concatenate(biases)])
        ours.attn.proj.set_weights([flat(mha._output_dense.kernel).reshape(dim, dim), flat(mha._output_dense.bias)])
        ours.norm1.set_weights([flat(w) for w in block.layer_norm_1.weights])
        ours.norm2.set_weights([flat(w) for w in block.layer_norm_2.weights])
        ours.mlp.fc1.set_weights([flat(w) for w in block.mlp.dense_1.weights])
        ours.mlp.fc2.set_weights([flat(w) for w in block.mlp.dense_2.weights])
    vit_model.get_layer("norm").set_weights([flat(w) for w in encoder.layer_norm.weights])
    vit_model.get_layer("head").set_weights([flat(w) for w in hub_model.get_layer("head").weights])
