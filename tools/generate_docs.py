"""Regenerates every generated section of the docs: `python -m tools.generate_docs`.

The model tables (docs/models.md and README.md's summary, from the registry),
README.md's speed table (from benchmarks/results/paired.md) and the
command-line reference (docs/cli.md, from the commands' flags).
"""

from __future__ import annotations

from tools import cli_reference, model_table, speed_table
from tools.doc_sections import ROOT, update_file


def main() -> None:
    jobs = (
        (model_table.MODELS_PAGE, model_table.replace_table),
        (model_table.README, model_table.replace_summary),
        (speed_table.README, speed_table.replace_table),
        (cli_reference.CLI_PAGE, cli_reference.replace_reference),
    )
    for path, render in jobs:
        print(f"{path.relative_to(ROOT)}: {'updated' if update_file(path, render) else 'current'}")


if __name__ == "__main__":
    main()
