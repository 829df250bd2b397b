"""The README's model table, generated from the registry so it never drifts.

Run `python -m keras_vit.models.table --write README.md` after registering a
variant; a test regenerates the table and compares it with the README.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from keras_vit.models.registry import list_models, model_spec

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
    if START not in readme or END not in readme:
        raise ValueError(f"The README has no {START} ... {END} markers to put the model table between.")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{markdown_table()}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="README to update in place (atomically)")
    args = parser.parse_args()
    if not args.write:
        print(markdown_table())
        return
    updated = replace_table(args.write.read_text())
    temporary = args.write.with_suffix(".tmp")
    temporary.write_text(updated)
    temporary.replace(args.write)


if __name__ == "__main__":
    main()
