"""Generates the EVA tables: every timm `eva.py` name as `keras_vit.EVA` arguments, and its pretrained tags.

Reads timm's registered kwargs and default pretrained config
(`tools.timm_capture`), translates them to `EVAConfig` fields and writes
keras_vit/models/timm_eva_variants.py; every pretrained tag of those names
(`timm.list_pretrained`) goes to keras_vit/weights/timm_eva_checkpoints.py as
catalogue rows. Facts only. Needs timm (the `test` extra).

    python -m tools.timm_eva_variants          # rewrites both tables
    python -m tools.timm_eva_variants --check  # fails if either is stale
"""

from __future__ import annotations

import argparse
import pathlib
import pprint
import subprocess
import sys
from typing import Any

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_vit"
TARGET = PACKAGE / "models" / "timm_eva_variants.py"
CHECKPOINT_TARGET = PACKAGE / "weights" / "timm_eva_checkpoints.py"
HF_URL = "https://huggingface.co/{}/resolve/main/model.safetensors"
ROPE_TYPES = {"cat": "axial", "dinov3": "centered", "mixed": "mixed"}
# Arguments that only shape training (coordinate augmentation, init) or are timm defaults we share.
IGNORED = {"rope_rescale_coords", "head_init_scale"}


def _norm(norm_layer) -> tuple[str, float]:
    """(kind, epsilon) of timm's `norm_layer` (a class or a functools.partial of one)."""
    if norm_layer is None:
        return "layer", 1e-6
    cls = getattr(norm_layer, "func", norm_layer)
    eps = getattr(norm_layer, "keywords", {}).get("eps", 1e-6 if cls.__name__ != "LayerNorm" else None)
    if eps is None:  # timm.layers.LayerNorm defaults to 1e-6, torch.nn.LayerNorm to 1e-5
        eps = 1e-6 if cls.__module__.startswith("timm") else 1e-5
    return ("rms" if "Rms" in cls.__name__ else "layer"), float(eps)


def _mlp(kw: dict[str, Any], dim: int) -> tuple[str, int]:
    ratio = kw.get("mlp_ratio", 4.0)
    if not kw.get("swiglu_mlp", False):
        return "mlp", int(dim * ratio)
    align = kw.get("swiglu_align_to", 0)
    unpacked = kw.get("scale_mlp", False) or (align and not kw.get("use_post_norm", False))
    if unpacked:
        hidden = int(dim * ratio)
        return "swiglu", hidden + (-hidden % align) if align else hidden
    return "swiglu_packed", int(dim * ratio)


def translate(kwargs: dict[str, Any], pretrained: dict[str, Any]) -> dict[str, Any]:
    """timm `Eva` kwargs (+ its pretrained config's input size and classes) -> `keras_vit.EVA` arguments."""
    kw = dict(kwargs)
    unknown = set(kw) - KNOWN - IGNORED
    if unknown:
        raise ValueError(f"timm Eva arguments this generator does not translate: {sorted(unknown)}")
    dim, heads = kw["embed_dim"], kw["num_heads"]
    image = kw.get("img_size", pretrained["input_size"])
    norm, eps = _norm(kw.get("norm_layer"))
    mlp_kind, mlp_dim = _mlp(kw, dim)
    kv = kw.get("num_kv_heads")
    if isinstance(kv, (tuple, list)):
        kv = None if all(h == heads for h in kv) else list(kv)
    pre_norm = kw.get("use_pre_transformer_norm", False)
    rope = ROPE_TYPES[kw.get("rope_type", "cat")] if kw.get("use_rot_pos_emb", False) else "none"
    arch = dict(
        image_size=list(image) if isinstance(image, (tuple, list)) else image,
        patch_size=kw["patch_size"],
        hidden_dim=dim,
        depth=kw["depth"],
        num_heads=heads,
        num_kv_heads=kv,
        mlp_dim=mlp_dim,
        mlp_kind=mlp_kind,
        mlp_inner_norm=kw.get("scale_mlp", False),
        qkv_bias=kw.get("qkv_bias", True),
        key_bias=kw.get("attn_type", "eva") == "rope",
        qkv_fused=kw.get("qkv_fused", True),
        qk_norm=kw.get("qk_norm", False),
        attn_inner_norm=kw.get("scale_attn_inner", False),
        norm=norm,
        layer_norm_epsilon=eps,
        layer_scale_init=None if kw.get("use_post_norm") else kw.get("init_values"),
        attn_only_layer_scale=kw.get("attn_only_layer_scale", False),
        post_norm_blocks=kw.get("use_post_norm", False),
        class_token=kw.get("class_token", True),
        num_register_tokens=kw.get("num_reg_tokens", 0),
        position_embedding="learned" if kw.get("use_abs_pos_emb", True) else "none",
        pos_embed_prefix=not kw.get("no_embed_class", False),
        patch_bias=not pre_norm,
        pre_norm=pre_norm,
        final_norm=kw.get("use_post_transformer_norm"),
        fc_norm=kw.get("use_fc_norm"),
        pooling=kw.get("global_pool", "avg"),
        rope=rope,
        dynamic_image_size=kw.get("dynamic_img_size", False),
        num_classes=pretrained["num_classes"],
    )
    if arch["pooling"] == "map":
        arch.update(
            pool_num_heads=kw.get("attn_pool_num_heads") or heads,
            pool_mlp_ratio=float(kw.get("attn_pool_mlp_ratio") or kw.get("mlp_ratio", 4.0)),
        )
    if rope != "none":
        arch.update(
            rope_temperature=float(kw.get("rope_temperature", 10000.0)),
            rope_grid_offset=float(kw.get("rope_grid_offset", 0.0)),
            rope_grid_indexing=kw.get("rope_grid_indexing", "ij"),
            rope_rotate_half=kw.get("rope_rotate_half", False),
        )
        if rope == "axial" and kw.get("ref_feat_shape") is not None:
            ref = kw["ref_feat_shape"]
            arch["rope_ref_feat_shape"] = list(ref) if isinstance(ref, (tuple, list)) else [ref, ref]
    return {k: v for k, v in arch.items() if k in ALWAYS or k not in DEFAULTS or DEFAULTS[k] != v}


KNOWN = {
    "img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_kv_heads", "mlp_ratio", "swiglu_mlp",
    "swiglu_align_to", "scale_mlp", "scale_attn_inner", "qkv_bias", "qkv_fused", "qk_norm", "attn_type",
    "norm_layer", "init_values", "attn_only_layer_scale", "use_post_norm", "class_token", "num_reg_tokens",
    "use_abs_pos_emb", "no_embed_class", "use_pre_transformer_norm", "use_post_transformer_norm", "use_fc_norm",
    "global_pool", "attn_pool_num_heads", "attn_pool_mlp_ratio", "use_rot_pos_emb", "rope_type",
    "rope_temperature", "rope_grid_offset", "rope_grid_indexing", "rope_rotate_half", "ref_feat_shape",
    "dynamic_img_size",
}  # fmt: skip
DEFAULTS: dict[str, Any] = {}
ALWAYS = ("image_size", "patch_size", "hidden_dim", "depth", "num_heads", "mlp_dim", "num_classes")


def family(name: str, kwargs: dict[str, Any]) -> str:
    if kwargs.get("rope_type") == "dinov3":
        return "dinov3"
    if name.startswith("vit_pe_"):
        return "pe"
    if name.startswith("eva02_"):
        return "eva02"
    if name.startswith("eva_"):
        return "eva"
    return "rope_vit"


def table() -> list[dict[str, Any]]:
    """One entry per timm `eva.py` name, in timm's order."""
    from keras_vit.models.eva import EVAConfig
    from tools.timm_capture import capture

    DEFAULTS.update({f: getattr(EVAConfig, f) for f in EVAConfig.__dataclass_fields__ if hasattr(EVAConfig, f)})
    rows = []
    for variant in capture("eva"):
        p = variant.pretrained
        rows.append(
            dict(
                name=variant.name,
                family=family(variant.name, variant.kwargs),
                arch=translate(variant.kwargs, p),
                input_size=tuple(p["input_size"]),
                mean=tuple(float(m) for m in p["mean"]),
                std=tuple(float(s) for s in p["std"]),
                crop_pct=float(p["crop_pct"]),
                interpolation=p["interpolation"],
                num_classes=p["num_classes"],
                tag=p["tag"],
                license=p["license"] or "",
            )
        )
    return rows


def checkpoints(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`PretrainedCheckpoint` fields of every pretrained tag timm lists for the EVA names."""
    import timm
    from timm.models import _registry

    models = {row["name"]: row for row in rows}
    entries = []
    for tag in timm.list_pretrained():
        model = tag.split(".")[0]
        if model not in models:
            continue
        cfg = _registry.get_pretrained_cfg(tag)
        size = tuple(cfg.input_size[1:])
        arch = {"num_classes": cfg.num_classes}
        if size != tuple(models[model]["input_size"]):
            arch["image_size"] = list(size)
        entries.append(
            dict(
                name=tag,
                model=model,
                file_name=f"{tag}.safetensors",
                url=HF_URL.format(cfg.hf_hub_id),
                format="safetensors",
                license=cfg.license or "",
                input_size=size,
                mean=tuple(float(m) for m in cfg.mean),
                std=tuple(float(v) for v in cfg.std),
                num_classes=cfg.num_classes,
                arch=arch,
                source=f"timm {tag}; https://huggingface.co/{cfg.hf_hub_id}",
            )
        )
    return entries


def _formatted(text: str, target: pathlib.Path) -> str:
    """`text` as the project's formatter leaves it, so the checked-in tables stay `ruff format`-clean."""
    return subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(target), "-"],
        input=text, capture_output=True, text=True, check=True, cwd=PACKAGE.parent,
    ).stdout  # fmt: skip


def render(rows: list[dict[str, Any]]) -> str:
    body = pprint.pformat(rows, width=118, sort_dicts=False)
    text = (
        '"""timm `eva.py` variants as `keras_vit.EVA` arguments and pretrained defaults.\n\n'
        "Generated by tools/timm_eva_variants.py from timm's registry; do not edit.\n"
        '"""\n\n'
        f"EVA_VARIANTS = {body}\n"
    )
    return _formatted(text, TARGET)


def render_checkpoints(entries: list[dict[str, Any]]) -> str:
    body = pprint.pformat(entries, width=118, sort_dicts=False)
    text = (
        '"""timm\'s pretrained tags of the EVA family as `keras_vit.weights` catalogue rows (`PretrainedCheckpoint`).\n\n'
        "Generated by tools/timm_eva_variants.py from timm's pretrained configs; do not edit.\n"
        '"""\n\n'
        f"EVA_CHECKPOINTS = {body}\n"
    )
    return _formatted(text, CHECKPOINT_TARGET)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the table is out of date")
    rows = table()
    outputs = {TARGET: render(rows), CHECKPOINT_TARGET: render_checkpoints(checkpoints(rows))}
    check = parser.parse_args().check
    for target, text in outputs.items():
        if check:
            if not target.exists() or target.read_text() != text:
                print(f"{target} is out of date; run python -m tools.timm_eva_variants", file=sys.stderr)
                return 1
            continue
        tmp = target.with_suffix(".py.tmp")
        tmp.write_text(text)
        tmp.replace(target)
        print(f"wrote {len(text.splitlines())} lines to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
