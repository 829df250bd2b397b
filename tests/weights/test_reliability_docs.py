"""docs/weights-reliability.md works as written: each Python block runs alone in an empty folder."""

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "weights-reliability.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)


def test_page_has_its_examples():
    assert len(python_blocks()) == 3


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_python_block_runs(index, tmp_path, monkeypatch, capsys):
    import transformers  # noqa: F401  (block 1 uses it; the import lets tests/conftest.py load torch before TF)

    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks()[index], f"{PAGE.name} block {index}", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    if index == 0:  # the messages the page quotes are the ones printed
        assert (
            "'cut.safetensors' is truncated: tensor 'pos_embed' ends at byte 326356 but the file has 326256" in printed
        )
        assert "unexpected in the file" in printed and "nothing was loaded" in printed
    elif index == 2:  # one download, then a re-download after the damage; the digest is the file's
        assert printed.count("Downloading file://") == 2
        digest = re.search(r"^([0-9a-f]{64})$", printed, re.M).group(1)
        assert (tmp_path / "cache" / "published.bin.sha256").read_text().startswith(digest)
        assert re.search(
            rf"Cached 'cache/published.bin' has SHA-256 [0-9a-f]{{64}}, not the expected {digest}", printed
        )
    else:
        assert printed.startswith("1e-12\n")
        assert "num_attention_heads=4 in config.json, but the model has num_heads=2" in printed
