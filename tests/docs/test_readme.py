"""The README works as written: its Python blocks run, its model table is today's registry, its CLI
reference is today's flags."""

import re
import shlex
from pathlib import Path

import pytest

from keras_vit import cli_reference
from keras_vit.models import table
from tests.docs.readme_files import prepare_for_python_block

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def cli_commands() -> list[list[str]]:
    """Every `keras-vit ...` command line in the README's shell blocks."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", README, re.DOTALL):
        for line in block.splitlines():
            for part in re.split(r"&&|;", line.split("#")[0]):
                part = part.strip()
                if part.startswith("keras-vit"):
                    commands.append(shlex.split(part))
    return commands


def test_readme_top_has_exactly_two_setup_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.DOTALL).group(1)
    lines = [line for line in first_block.splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("pip install") and "keras-vit train" in lines[0]
    assert lines[1].startswith("pip install") and "pytest" in lines[1]


def test_model_table_equals_registry():
    assert table.replace_table(README) == README, "run: python -m keras_vit.models.table --write README.md"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    """Each block alone, in an empty folder holding only the files a reader brings (see readme_files)."""
    code = python_blocks()[index]
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("KERAS_VIT_CACHE", str(cache))  # catalogue names resolve to files written there
    prepare_for_python_block(code, work, cache)
    exec(compile(code, f"README block {index}", "exec"), {"__name__": "__readme__"})


def test_readme_cli_commands_are_known_commands():
    from keras_vit.cli import COMMANDS

    commands = cli_commands()
    assert commands, "the README shows no keras-vit command"
    for argv in commands:
        assert len(argv) == 1 or argv[1] in COMMANDS or argv[1] in ("--help", "--version"), argv


def test_cli_reference_equals_flags():
    assert cli_reference.replace_reference(README) == README, "run: python -m keras_vit.cli_reference --write README.md"
