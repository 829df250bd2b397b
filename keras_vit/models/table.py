"""The README's model table, generated from the registry so it never drifts.

Run `python -m keras_vit.models.table --write README.md` after registering a
variant; a test regenerates the table and compares it with the README.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from keras_vit.models.registry import list_models, model_spec
from keras_vit.readme_sections import replace_section, write_text

START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"
# Checkpoint formats each family loads (keras_vit.weights detects the format from the file).
WEIGHT_FORMATS = {
    "vit": "ViT `.npz`, timm / HF safetensors",
    "deit": "timm safetensors",
    "transformer": "`.weights.h5`",
}


def _source_link(source: str) -> str:
    match = re.search(r"(https?://\S+)", source)
    label = source.split(",")[0].strip() or "-"
    return f"[{label}]({match.group(1).rstrip(';')})" if match else label


def markdown_table() -> str:
    """One row per registered model: name, parameters, input size, source, loadable formats."""
    rows = ["| model | params | input | source | loads |", "| --- | ---: | --- | --- | --- |"]
    for name in list_models():
        spec = model_spec(name)
        size = "x".join(str(s) for s in spec.input_size) if spec.input_size else "-"
        formats = WEIGHT_FORMATS.get(spec.family, "`.weights.h5`")
        rows.append(f"| `{name}` | {spec.num_params / 1e6:.2f}M | {size} | {_source_link(spec.source)} | {formats} |")
    return "\n".join(rows)


def replace_table(readme: str) -> str:
    """`readme` with the text between the table markers regenerated."""
    return replace_section(readme, START, END, markdown_table(), "model table")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="README to update in place (atomically)")
    args = parser.parse_args()
    if not args.write:
        print(markdown_table())
        return
    write_text(args.write, replace_table(args.write.read_text()))


if __name__ == "__main__":
    main()
