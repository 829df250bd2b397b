"""docs/speed.md works as written: each Python block runs on its own."""

import re
from pathlib import Path

import pytest

SPEED_DOC = Path(__file__).resolve().parents[2] / "docs" / "speed.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", SPEED_DOC.read_text(), re.DOTALL)


def test_speed_doc_has_python_blocks():
    assert python_blocks()


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_speed_doc_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks()[index], f"docs/speed.md block {index}", "exec"), {"__name__": "__doc__"})
