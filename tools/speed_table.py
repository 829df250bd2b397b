"""README's speed table, generated from the paired benchmark results (benchmarks/results/paired.md).

Each row is one workload; each column one library setting, as its speed
relative to keras-hub's float32 model in the same paired rotation (the
"vs first" median). Run `python -m tools.speed_table --write` after new paired
runs; a test regenerates the table and compares it with the README.
"""

from __future__ import annotations

import argparse
import re

from tools.doc_sections import ROOT, replace_section, update_file

START, END = "<!-- speed-table:start -->", "<!-- speed-table:end -->"
PAIRED = ROOT / "benchmarks" / "results" / "paired.md"
README = ROOT / "README.md"
ROWS = (  # (task, model, batch, what the reader sees)
    ("predict", "vit_base_patch16_224", 8, "ViT-B/16 inference, batch 8"),
    ("predict", "vit_tiny_patch16_224", 8, "ViT-Ti/16 inference, batch 8"),
    ("train", "vit_cifar_patch4_32", 128, "CIFAR ViT (`vit_cifar_patch4_32`) training, batch 128"),
    ("train", "vit_tiny_patch16_224", 32, "ViT-Ti/16 training, batch 32"),
)
COLUMNS = {
    "keras_hub:float32:auto": "keras-hub fp32",
    "keras_vit:float32:off": "keras_vit fp32",
    "keras_vit:bfloat16:off": "keras_vit bf16",
    "timm:float32": "timm fp32",
    "timm:bfloat16": "timm bf16",
}
_TITLE = re.compile(r"^\*\*(predict|train) (\S+) batch (\d+),[^*]*\*\*$")


def paired_tables(text: str) -> list[dict]:
    """Every table of a paired-results file: task, model, batch and {variant: median vs first}."""
    tables = []
    for line in text.splitlines():
        title = _TITLE.match(line.strip())
        if title:
            task, model, batch = title.groups()
            tables.append({"task": task, "model": model, "batch": int(batch), "ratios": {}})
        elif tables and line.startswith("| ") and not line.startswith("| variant"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if len(cells) > 2 and cells[2] != "n/a":
                tables[-1]["ratios"][cells[0]] = cells[2].split()[0]
    return tables


def markdown_table(text: str | None = None) -> str:
    """The README's speed table; for each workload the rotation that measured the most of its columns."""
    tables = paired_tables(PAIRED.read_text() if text is None else text)
    rows = ["| workload | " + " | ".join(COLUMNS.values()) + " |", "| --- |" + " ---: |" * len(COLUMNS)]
    for task, model, batch, label in ROWS:
        candidates = [t for t in tables if (t["task"], t["model"], t["batch"]) == (task, model, batch)]
        if not candidates:
            raise ValueError(f"{PAIRED.name} has no paired table for {task} {model} batch {batch}.")
        best = max(reversed(candidates), key=lambda t: sum(v in t["ratios"] for v in COLUMNS))
        rows.append(f"| {label} | " + " | ".join(best["ratios"].get(v, "-") for v in COLUMNS) + " |")
    return "\n".join(rows)


def replace_table(readme: str) -> str:
    """`readme` with the text between the speed-table markers regenerated."""
    return replace_section(readme, START, END, markdown_table(), "speed table")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place (atomically)")
    args = parser.parse_args()
    if not args.write:
        print(markdown_table())
        return
    print(f"{README.relative_to(ROOT)}: {'updated' if update_file(README, replace_table) else 'current'}")


if __name__ == "__main__":
    main()
