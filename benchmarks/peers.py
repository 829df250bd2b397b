"""Builds the same ViT in keras_vit, keras-hub and timm from one architecture dict.

Every builder takes the keras_vit architecture (`ViTConfig.to_dict()` keys)
so the three libraries run the same dimensions. keras-hub's `ViTBackbone`
returns normalised tokens; a class-token slice and a float32 `Dense` head
make it the same classifier as keras_vit's `ViT` (pre-norm blocks, final
LayerNorm, exact GELU, eps 1e-6).

Import order matters: timm (torch._dynamo) must be imported before
TensorFlow in a process, so `build_timm` is only called in processes that
have not imported TensorFlow (the harness runs each case on its own).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LIBRARIES = ("keras_vit", "keras_hub", "timm")


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


def check_comparable(arch: dict[str, Any]) -> None:
    """Raises ValueError when the peers cannot express `arch` (they have no such options)."""
    unsupported = {
        "distillation_token": False,
        "num_register_tokens": 0,
        "qk_norm": False,
        "layer_scale_init": None,
        "class_token": True,
        "pooling": "token",
        "position_embedding": "learned",
        "pos_embed_prefix": True,
        "representation_size": None,
    }
    for key, plain in unsupported.items():
        if arch.get(key, plain) != plain:
            raise ValueError(
                f"The peer libraries only build the plain class-token ViT; `{key}` must be {plain!r} to compare. "
                f"Received: {key}={arch[key]!r}"
            )
    if arch.get("fc_norm"):
        raise ValueError("The peer libraries only build the plain class-token ViT. Received: fc_norm=True")


def build_keras_vit(arch: dict[str, Any], dtype: str | None = None):
    """keras_vit's `ViT` with `arch`; `dtype` is a Keras dtype policy name or None (global)."""
    from keras_vit.models.vit import ViT

    return ViT(dtype=dtype, **arch)


def build_keras_hub(arch: dict[str, Any], dtype: str | None = None):
    """keras-hub `ViTBackbone` with the same dims, class-token slice and a float32 Dense head."""
    import keras
    import keras_hub

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


def build_timm(arch: dict[str, Any]):
    """timm's `VisionTransformer` with the same dims (PyTorch, float32 weights, eval mode)."""
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
