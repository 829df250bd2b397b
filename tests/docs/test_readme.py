"""The README works as written: its Python blocks run, its model table is today's registry."""

import re
import shlex
from pathlib import Path

import pytest

from keras_vit.models import table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def cli_commands() -> list[list[str]]:
    """Every `keras-vit ...` command line in the README's shell blocks."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", README, re.S):
        for line in block.splitlines():
            for part in re.split(r"&&|;", line.split("#")[0]):
                part = part.strip()
                if part.startswith("keras-vit"):
                    commands.append(shlex.split(part))
    return commands


def test_readme_top_has_exactly_two_setup_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    lines = [line for line in first_block.splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("pip install") and "keras-vit train" in lines[0]
    assert lines[1].startswith("pip install") and "pytest" in lines[1]


def test_model_table_equals_registry():
    assert table.replace_table(README) == README, "run: python -m keras_vit.models.table --write README.md"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks()[index], f"README block {index}", "exec"), {"__name__": "__readme__"})


def test_readme_cli_commands_are_known_commands():
    from keras_vit.cli import COMMANDS

    commands = cli_commands()
    assert commands, "the README shows no keras-vit command"
    for argv in commands:
        assert len(argv) == 1 or argv[1] in COMMANDS or argv[1] in ("--help", "--version"), argv
