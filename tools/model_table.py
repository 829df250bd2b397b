"""The model tables, generated from the registry so they never drift.

`docs/models.md` holds the full table, one section per family; README.md holds
a one-row-per-family summary that links to it. Run
`python -m tools.model_table --write` after registering a variant; a test
regenerates both and compares them with the files.
"""

from __future__ import annotations

import argparse
import re

from keras_vit.models.registry import list_models, model_spec
from tools.doc_sections import ROOT, replace_section, update_file

START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"
SUMMARY_START, SUMMARY_END = "<!-- model-summary:start -->", "<!-- model-summary:end -->"
MODELS_PAGE = ROOT / "docs" / "models.md"
README = ROOT / "README.md"
SITE = "https://keras-vit.github.io/keras-vit"

# Families in the order the docs present them: heading, one line on what they are.
FAMILIES = {
    "vit": (
        "ViT",
        "Vision Transformers (Dosovitskiy et al.), with register-token, small-data, gap and parallel-block variants",
    ),
    "deit": ("DeiT", "data-efficient ViTs (Touvron et al.), plain and with a distillation token"),
    "transformer": ("Transformer", "the encoder-decoder Transformer (Vaswani et al.) for token sequences"),
    "mae": ("MAE", "masked autoencoders (He et al.) that pretrain a ViT encoder on unlabeled images"),
    "deit3": ("DeiT III", "DeiT III (Touvron et al. 2022): LayerScale, no position embedding for the class token"),
    "clip": ("CLIP", "CLIP image towers (Radford et al.) and their fine-tunes: pre-norm, no patch bias"),
    "siglip": ("SigLIP", "SigLIP and SigLIP 2 image towers (Zhai et al.): attention-pooling (MAP) or average heads"),
    "dinov2": ("DINOv2", "DINOv2 (Oquab et al.) and TIPS self-supervised backbones, with and without registers"),
    "aimv2": ("AIMv2", "AIMv2 (Fini et al.): RMSNorm, SwiGLU MLPs, no biases, average pooling"),
    "flexivit": ("FlexiViT", "FlexiViT (Beyer et al.): one model for many patch sizes"),
    "beit3": ("BEiT-3", "BEiT-3 (Wang et al.) image towers: norms inside attention and MLP"),
    "eva": ("EVA", "EVA-01 (Fang et al.), `keras_vit.EVA`: CLIP-distilled giant ViTs"),
    "eva02": ("EVA-02", "EVA-02, `keras_vit.EVA`: 2D rotary embeddings, SwiGLU with sub-LN, CLIP towers"),
    "dinov3": ("DINOv3", "DINOv3 and its derivatives (LingBot, Sapiens2), `keras_vit.EVA`: centered rope, registers"),
    "rope_vit": ("ROPE-ViT", "rotary ViTs (Heo et al.; timm's rope_reg), `keras_vit.EVA`: axial and mixed rope"),
    "pe": ("PE", "Perception Encoder core/lang/spatial (Bolya et al.), `keras_vit.EVA`: pre-norm, MAP head"),
    "beit": ("BEiT", "ViTs with a relative position bias in every block (Bao et al.; BEiT v2, Peng et al.)"),
}
# Checkpoint formats each family loads (keras_vit.weights detects the format from the file).
WEIGHT_FORMATS = {
    "vit": "ViT `.npz`, timm / HF safetensors",
    "deit": "timm safetensors",
    "transformer": "`.weights.h5`",
    "mae": "HF ViTMAE safetensors, `.weights.h5`",
    "deit3": "timm safetensors",
    "clip": "timm safetensors",
    "siglip": "timm safetensors",
    "dinov2": "timm safetensors",
    "aimv2": "timm safetensors",
    "flexivit": "timm safetensors",
    "beit3": "timm safetensors",
    **dict.fromkeys(("eva", "eva02", "dinov3", "rope_vit", "pe"), "timm safetensors"),
    "beit": "timm / HF Beit safetensors, `.weights.h5`",
}


def _source_link(source: str) -> str:
    match = re.search(r"(https?://\S+)", source)
    label = source.split(",")[0].strip() or "-"
    return f"[{label}]({match.group(1).rstrip(';')})" if match else label


def _by_family() -> dict[str, list]:
    groups: dict[str, list] = {}
    for name in list_models():
        spec = model_spec(name)
        groups.setdefault(spec.family, []).append(spec)
    order = list(FAMILIES) + sorted(set(groups) - set(FAMILIES))
    return {family: groups[family] for family in order if family in groups}


def _heading(family: str) -> str:
    return FAMILIES.get(family, (family, ""))[0]


def markdown_table() -> str:
    """One section per family, one row per registered model: name, parameters, input, source, loadable formats."""
    parts = []
    for family, specs in _by_family().items():
        title, about = FAMILIES.get(family, (family, ""))
        parts += [f"### {title}", ""]
        if about:
            parts += [f"{about[0].upper()}{about[1:]}: {len(specs)} models.", ""]
        parts += ["| model | params | input | source | loads |", "| --- | ---: | --- | --- | --- |"]
        for spec in specs:
            size = "x".join(str(s) for s in spec.input_size) if spec.input_size else "-"
            formats = WEIGHT_FORMATS.get(family, "`.weights.h5`")
            parts.append(
                f"| `{spec.name}` | {spec.num_params / 1e6:.2f}M | {size} | {_source_link(spec.source)} | {formats} |"
            )
        parts.append("")
    return "\n".join(parts).rstrip("\n")


def markdown_summary() -> str:
    """One row per family for the README: how many models, their parameter range, and where the table is."""
    rows = ["| family | models | parameters | for example |", "| --- | ---: | --- | --- |"]
    for family, specs in _by_family().items():
        params = sorted(spec.num_params for spec in specs)
        names = [spec.name for spec in specs]
        example = next((n for n in names if "base_patch16_224" in n), next((n for n in names if "base" in n), names[0]))
        title = _heading(family)
        anchor = re.sub(r"[\s-]+", "-", re.sub(r"[^\w\s-]", "", title.lower())).strip("-")  # mkdocs' toc slug
        rows.append(
            f"| [{title}]({SITE}/models/#{anchor}) | {len(specs)} | "
            f"{params[0] / 1e6:.2f}M - {params[-1] / 1e6:.2f}M | `{example}` |"
        )
    return "\n".join(rows)


def replace_table(page: str) -> str:
    """`page` (docs/models.md) with the text between the table markers regenerated."""
    return replace_section(page, START, END, markdown_table(), "model table")


def replace_summary(readme: str) -> str:
    """`readme` with the text between the summary markers regenerated."""
    return replace_section(readme, SUMMARY_START, SUMMARY_END, markdown_summary(), "model summary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update docs/models.md and README.md in place")
    args = parser.parse_args()
    if not args.write:
        print(markdown_table())
        return
    for path, render in ((MODELS_PAGE, replace_table), (README, replace_summary)):
        print(f"{path.relative_to(ROOT)}: {'updated' if update_file(path, render) else 'current'}")


if __name__ == "__main__":
    main()
