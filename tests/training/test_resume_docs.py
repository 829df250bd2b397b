"""The Python blocks of docs/resume.md run as written (offline, in a temporary folder)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def python_blocks(path):
    with open(path) as file:
        return re.findall(r"```python\n(.*?)```", file.read(), flags=re.S)


def test_resume_doc_python_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(os.path.join(ROOT, "docs", "resume.md"))
    assert blocks
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/resume.md", "exec"), {"__name__": "__docs__"})
    assert "Resuming from backup demo_backup/step-000001-000000005 (epoch 2, step 5)" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "demo_backup")
