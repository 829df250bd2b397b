"""The command-line reference (docs/cli.md), generated from the commands' own absl flags.

Run `python -m tools.cli_reference --write` after changing a command or a
flag; a test regenerates the reference and compares it with the page, so the
documented flags are always the ones `keras-vit <command> --help` prints.

absl flags are process-global and each command module skips a flag another
module already defined, so the flags are collected in a fresh Python process
that imports one command module at a time and removes its flags before the
next one (`collect_flags`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Any

from tools.doc_sections import ROOT, replace_section, update_file

START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"
CLI_PAGE = ROOT / "docs" / "cli.md"

# Positional arguments, which absl does not know about (each command's `main` checks them).
POSITIONAL = {"list": "[PATTERN]", "info": "NAME", "convert": "IN OUT"}


_TYPES = {
    "string enum": "one of",
    "multi string": "string, repeatable",
    "comma separated list of strings": "comma-separated list",
}


def _own_help(text: str) -> str:
    """The help a module wrote, without the parts absl adds (enum choices, the multi-flag note)."""
    text = re.sub(r"^<[^>]*>: ", "", text)
    return text.replace(";\n    repeat this option to specify a list of values", "").replace(
        "; repeat this option to specify a list of values", ""
    )


def _flags_here() -> dict[str, list[dict[str, Any]]]:
    """Flags of every command module, keyed by module name. Call only in a fresh process (it deletes flags)."""
    import importlib

    from absl import flags

    from keras_vit.cli import COMMANDS

    result: dict[str, list[dict[str, Any]]] = {}
    for module_name, _ in COMMANDS.values():
        if module_name in result:
            continue
        importlib.import_module(module_name)
        entries = []
        for flag in flags.FLAGS.get_flags_for_module(module_name):
            values = getattr(flag.parser, "enum_values", None)
            entries.append(
                {
                    "name": flag.name,
                    "type": _TYPES.get(flag.flag_type(), flag.flag_type()),
                    "default": flag.default_as_str,
                    "values": list(values) if values else None,
                    "help": _own_help(flag.help),
                }
            )
            delattr(flags.FLAGS, flag.name)  # the next module defines its own flag of that name
        result[module_name] = entries
    return result


def collect_flags() -> dict[str, list[dict[str, Any]]]:
    """Flags of every command module (name, type, default, enum values, help), from a fresh process.

    Returns:
        {module name: [flag dicts in definition order]}.
    """
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)
    out = subprocess.run(
        [sys.executable, "-m", "tools.cli_reference", "--json"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(flag: dict[str, Any]) -> str:
    default = flag["default"]
    if default is None:
        return "-"
    return f"`{default.strip(chr(39)) if default.startswith(chr(39)) else default}`"


def markdown_reference(module_flags: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """`keras-vit --help` and one flag table per command module.

    Args:
        module_flags: the output of `collect_flags()`; collected when None.

    Returns:
        Markdown text (without the markers).
    """
    from keras_vit.cli import COMMANDS, usage

    module_flags = collect_flags() if module_flags is None else module_flags
    parts = ["```text", "$ keras-vit --help", usage(), "```"]
    modules: dict[str, list[str]] = {}
    for command, (module_name, _) in COMMANDS.items():
        modules.setdefault(module_name, []).append(command)
    for module_name, commands in modules.items():
        heading = ", ".join(f"`keras-vit {c}{' ' + POSITIONAL[c] if c in POSITIONAL else ''}`" for c in commands)
        parts += ["", f"**{heading}** (`{module_name}`)", ""]
        parts += [f"- `{c}`: {COMMANDS[c][1]}" for c in commands]
        flags_ = module_flags.get(module_name, [])
        if not flags_:
            parts += ["", "No flags."]
            continue
        parts += ["", "| flag | type | default | meaning |", "| --- | --- | --- | --- |"]
        for flag in flags_:
            kind = flag["type"] + (f" {', '.join(flag['values'])}" if flag["values"] else "")
            parts.append(f"| `--{flag['name']}` | {_cell(kind)} | {_cell(_default(flag))} | {_cell(flag['help'])} |")
    return "\n".join(parts)


def replace_reference(page: str, reference: str | None = None) -> str:
    """`page` (docs/cli.md) with the text between the CLI reference markers regenerated."""
    reference = markdown_reference() if reference is None else reference
    return replace_section(page, START, END, reference, "CLI reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update docs/cli.md in place (atomically)")
    parser.add_argument("--json", action="store_true", help="print the collected flags as JSON (fresh process)")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(_flags_here()))
        return
    if not args.write:
        print(markdown_reference())
        return
    print(f"{CLI_PAGE.relative_to(ROOT)}: {'updated' if update_file(CLI_PAGE, replace_reference) else 'current'}")


if __name__ == "__main__":
    main()
