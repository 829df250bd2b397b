"""docs/weights-reliability.md works as written: each Python block runs alone in an empty folder."""

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "weights-reliability.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)


def test_page_has_its_examples():
    assert len(python_blocks()) == 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_python_block_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks()[index], f"{PAGE.name} block {index}", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    if index == 0:  # the messages the page quotes are the ones printed
        assert (
            "'cut.safetensors' is truncated: tensor 'pos_embed' ends at byte 326356 but the file has 326256" in printed
        )
        assert "unexpected in the file" in printed and "nothing was loaded" in printed
    else:
        assert printed.startswith("1e-12\n")
        assert "num_attention_heads=4 in config.json, but the model has num_heads=2" in printed
