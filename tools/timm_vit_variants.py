"""Writes keras_vit/models/timm_vit_variants.py (every timm `vision_transformer.py` and `deit.py` name as data)
and keras_vit/weights/timm_vit_pretrained.py (their pretrained tags on timm's Hugging Face hub).

Reads what timm builds for each name (`tools.timm_capture`), translates the
constructor arguments into `keras_vit.ViT` architecture arguments and keeps
the default pretrained config (input size, mean/std, crop, interpolation,
classes, license). An argument it does not know stops the run, so no option
is dropped silently. Needs timm (the `test` extra).

    python -m tools.timm_vit_variants            # prints the module
    python -m tools.timm_vit_variants --write    # updates the package
"""

from __future__ import annotations

import argparse
import functools
import pprint
import subprocess
from typing import Any

from tools.doc_sections import ROOT
from tools.timm_capture import TimmVariant, capture

TARGET = ROOT / "keras_vit" / "models" / "timm_vit_variants.py"
PRETRAINED_TARGET = ROOT / "keras_vit" / "weights" / "timm_vit_pretrained.py"
# timm defaults of VisionTransformer that a name may leave out.
_DEFAULTS = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, global_pool="token")
# timm block classes -> `ViT(block_kind=...)`.
_BLOCKS = {
    "Block": "standard",
    "ResPostBlock": "res_post",
    "ParallelScalingBlock": "parallel_scaling",
    "ParallelThingsBlock": "parallel_things",
    "DiffParallelScalingBlock": "diff_parallel_scaling",
}
_ACTIVATIONS = {"GELU": "gelu", "SiLU": "silu", "QuickGELU": "quick_gelu", "GELUTanh": "gelu_tanh"}
_NORMS = {"LayerNorm": "layer", "RmsNorm": "rms"}
_IGNORED = ("pretrained_strict", "weight_init")
# Sub-families, first match wins; everything else is "vit".
_FAMILY_PATTERNS = (
    ("deit3_", "deit3"),
    ("deit_", "deit"),
    ("_clip", "clip"),
    ("siglip", "siglip"),
    ("dinov2", "dinov2"),
    ("tipsv2", "dinov2"),
    ("aimv2", "aimv2"),
    ("flexivit", "flexivit"),
    ("beit3", "beit3"),
)
# Paper of each name, first match wins.
_SOURCES = (
    ("deit3_", "DeiT III, Touvron et al. 2022, https://arxiv.org/abs/2204.07118"),
    ("deit_", "DeiT, Touvron et al. 2020, https://arxiv.org/abs/2012.12877"),
    ("_clip", "CLIP, Radford et al. 2021, https://arxiv.org/abs/2103.00020"),
    ("siglip", "SigLIP, Zhai et al. 2023, https://arxiv.org/abs/2303.15343"),
    ("tipsv2", "TIPS, Maninis et al. 2024, https://arxiv.org/abs/2410.16512"),
    ("dinov2", "DINOv2, Oquab et al. 2023, https://arxiv.org/abs/2304.07193"),
    ("aimv2", "AIMv2, Fini et al. 2024, https://arxiv.org/abs/2411.14402"),
    ("flexivit", "FlexiViT, Beyer et al. 2022, https://arxiv.org/abs/2212.08013"),
    ("beit3", "BEiT-3, Wang et al. 2022, https://arxiv.org/abs/2208.10442"),
    ("radio", "RADIO, Ranzinger et al. 2023, https://arxiv.org/abs/2312.06709"),
    ("eva_", "EVA, Fang et al. 2022, https://arxiv.org/abs/2211.07636"),
    ("intern", "InternViT, Chen et al. 2023, https://arxiv.org/abs/2312.14238"),
    ("_xp_", "ViT-22B parallel blocks, Dehghani et al. 2023, https://arxiv.org/abs/2302.05442"),
    ("18x2", "Three things about ViTs, Touvron et al. 2022, https://arxiv.org/abs/2203.09795"),
    ("36x1", "Three things about ViTs, Touvron et al. 2022, https://arxiv.org/abs/2203.09795"),
    ("vit_d", "Differential attention, Ye et al. 2024, https://arxiv.org/abs/2410.05258"),
    ("reg", "Registers, Darcet et al. 2023, https://arxiv.org/abs/2309.16588"),
    ("", "ViT, Dosovitskiy et al. 2020, https://arxiv.org/abs/2010.11929"),
)


def _first_match(name: str, patterns) -> str:
    return next(value for pattern, value in patterns if pattern in name)


def _class_name(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, functools.partial):
        return value.func.__name__
    return value.__name__


def _norm(value: Any) -> tuple[str, float]:
    """(kind, epsilon) of a timm norm layer argument (class or partial)."""
    name = _class_name(value)
    if name not in _NORMS:
        raise ValueError(f"Unknown timm norm layer {value!r}; teach tools/timm_vit_variants.py its keras_vit kind.")
    epsilon = value.keywords.get("eps", 1e-6) if isinstance(value, functools.partial) else 1e-6
    return _NORMS[name], float(epsilon)


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def _activation(value: Any) -> str:
    name = _class_name(value)
    return name if name in _ACTIVATIONS.values() else _ACTIVATIONS[name]


def architecture(variant: TimmVariant) -> dict[str, Any]:
    """`keras_vit.ViT` architecture arguments equal to what timm builds for `variant`."""
    kw = dict(_DEFAULTS, **{k: v for k, v in variant.kwargs.items() if k not in _IGNORED})
    take = kw.pop
    dim = take("embed_dim")
    arch: dict[str, Any] = dict(
        image_size=take("img_size", variant.pretrained["input_size"][0]),
        patch_size=take("patch_size"),
        hidden_dim=dim,
        depth=take("depth"),
        num_heads=take("num_heads"),
        mlp_dim=int(dim * take("mlp_ratio")),
    )
    if isinstance(arch["image_size"], (tuple, list)):
        arch["image_size"] = tuple(arch["image_size"])
    if any(size % arch["patch_size"] for size in _pair(arch["image_size"])):
        arch["drop_patch_remainder"] = True  # timm's patch convolution ignores the rows and columns left over
    options = dict(
        qkv_bias=take("qkv_bias", True),
        qk_norm=take("qk_norm", False),
        attn_inner_norm=take("scale_attn_norm", False),
        mlp_inner_norm=take("scale_mlp_norm", False),
        proj_bias=take("proj_bias", True),
        layer_scale_init=take("init_values", None),
        class_token=take("class_token", True),
        distillation_token=variant.model_class == "VisionTransformerDistilled",
        num_register_tokens=take("reg_tokens", 0),
        pos_embed_prefix=not take("no_embed_class", False),
        pre_norm=take("pre_norm", False),
        final_norm=take("final_norm", True),
        fc_norm=take("fc_norm", None),
        dynamic_image_size=take("dynamic_img_size", False),
        block_kind=_BLOCKS[_class_name(take("block_fn", "Block"))],
        attn_layer=take("attn_layer", "standard"),
        activation=_activation(take("act_layer", "GELU")),
        mlp_kind="mlp",
    )
    options["patch_bias"] = not options["pre_norm"]  # timm: `bias=not pre_norm` (CLIP's patch embedding)
    options["pooling"] = take("global_pool")
    kind, epsilon = _norm(take("norm_layer", "LayerNorm"))
    options.update(norm_layer=kind, layer_norm_epsilon=epsilon)
    if "embed_norm_layer" in kw:
        if _norm(take("embed_norm_layer")) != (kind, epsilon):
            raise ValueError(f"{variant.name}: the patch-embedding norm differs from the blocks' norm.")
        options["embed_norm"] = True
    mlp = take("mlp_layer", None)
    if mlp is not None:
        mlp_name = _class_name(mlp)
        if mlp_name == "SwiGLU":
            options["mlp_kind"] = "swiglu"
        elif mlp_name == "GluMlp" and not mlp.keywords.get("gate_last", True):
            options["mlp_kind"] = "swiglu_packed"
            options["activation"] = _activation(mlp.keywords.get("act_layer", "SiLU"))
        else:
            raise ValueError(f"{variant.name}: unknown timm MLP {mlp!r}")
    if kw:
        raise ValueError(f"{variant.name}: timm arguments {sorted(kw)} have no keras_vit translation yet.")
    num_classes = variant.pretrained["num_classes"]
    defaults = {field.name: field.default for field in _vit_fields()}
    arch.update({k: v for k, v in options.items() if v != defaults[k] or k == "pooling" and v != "token"})
    arch["num_classes"] = num_classes
    return arch


def _vit_fields():
    import dataclasses

    from keras_vit.models.vit import ViTConfig

    return dataclasses.fields(ViTConfig)


def table() -> dict[str, dict[str, Any]]:
    """name -> spec fields (family, arch, preprocessing, license, source), in timm's order."""
    rows = {}
    for variant in capture("vision_transformer") + capture("deit"):
        pretrained = variant.pretrained
        rows[variant.name] = dict(
            family=_first_match(variant.name, _FAMILY_PATTERNS + (("", "vit"),)),
            arch=architecture(variant),
            input_size=tuple(pretrained["input_size"]),
            mean=tuple(float(v) for v in pretrained["mean"]),
            std=tuple(float(v) for v in pretrained["std"]),
            crop_pct=float(pretrained["crop_pct"]),
            interpolation=pretrained["interpolation"],
            num_classes=pretrained["num_classes"],
            license=pretrained["license"] or "",
            source=_first_match(variant.name, _SOURCES),
            pretrained_tag=pretrained["tag"] or "",
        )
    return rows


def pretrained_table(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """ "name.tag" -> what the catalogue needs, for every tag timm serves from its own hub repositories."""
    import timm
    from timm.models import get_pretrained_cfg

    tags = {}
    for name, row in rows.items():
        for full_name in timm.list_pretrained(f"{name}.*"):
            cfg = get_pretrained_cfg(full_name)
            if not (cfg.hf_hub_id or "").startswith("timm/") or cfg.hf_hub_filename:
                continue  # not a model.safetensors in a timm repository
            tags[full_name] = dict(
                model=name,
                hf_hub_id=cfg.hf_hub_id,
                input_size=tuple(cfg.input_size[1:]),
                mean=tuple(float(v) for v in cfg.mean),
                std=tuple(float(v) for v in cfg.std),
                num_classes=cfg.num_classes,
                license=cfg.license or "",
                arch={"num_classes": cfg.num_classes},  # the head the file holds
            )
            if tags[full_name]["input_size"] != row["input_size"]:
                raise ValueError(f"{full_name}: input size differs from {name}'s; the catalogue would need image_size")
    return tags


def _module(docstring: str, variable: str, value: dict) -> str:
    body = pprint.pformat(value, width=120, sort_dicts=False)
    return f'"""{docstring}"""\n\n{variable} = {body}\n'


def render_pretrained() -> str:
    return _module(
        "timm 1.0.31's pretrained tags of its vision_transformer.py and deit.py names, served from its\n"
        "Hugging Face repositories as model.safetensors.\n\n"
        "Generated by tools/timm_vit_variants.py, do not edit. Facts only: repository id, input size,\n"
        "mean/std, classes and license of each tag.\n",
        "TIMM_VIT_PRETRAINED",
        pretrained_table(table()),
    )


def render() -> str:
    body = pprint.pformat(table(), width=120, sort_dicts=False)
    return (
        '"""timm 1.0.31\'s vision_transformer.py and deit.py names as keras_vit `ViT` arguments.\n\n'
        "Generated by tools/timm_vit_variants.py, do not edit. Facts only: hyper-parameters and\n"
        'each name\'s default pretrained config (input size, mean/std, crop, interpolation, classes).\n"""\n\n'
        f"TIMM_VIT_VARIANTS = {body}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {TARGET.relative_to(ROOT)}")
    text = render()
    if parser.parse_args().write:
        for target, content in ((TARGET, text), (PRETRAINED_TARGET, render_pretrained())):
            target.write_text(content)
            subprocess.run(["ruff", "format", "--quiet", str(target)], check=True)
            print(f"{target.relative_to(ROOT)}: written")
    else:
        print(text)


if __name__ == "__main__":
    main()
